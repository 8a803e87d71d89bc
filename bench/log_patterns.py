"""Throughput of k8s.log_patterns.analyze_logs on 10 MB of logs, against str.splitlines().

Inputs: a realistic log (access and application lines, ~1% of them errors of every known kind),
and three adversarial ones: a single 10 MB line repeating a keyword fragment, 10 MB of lines
that each hit several patterns, and a keyword-dense giant line for the widest bounded gap.
Run: .venv/bin/python bench/log_patterns.py   (last line: one JSON object)
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from k8s.log_patterns import analyze_logs  # noqa: E402

SIZE = 10 * 1024 * 1024
ERRORS = [
    "psycopg.OperationalError: connection failed: connection refused",
    "dial tcp: lookup redis on 10.96.0.10:53: no such host",
    "Traceback (most recent call last):",
    "KeyError: 'DATABASE_URL'",
    "java.lang.OutOfMemoryError: Java heap space",
    "open /data/x: permission denied",
    "container exited with code 137",
    "context deadline exceeded",
]


def realistic(size: int) -> str:
    rng = random.Random(4)
    lines: list[str] = []
    total = 0
    while total < size:
        if rng.random() < 0.01:
            line = f"2026-11-23T15:00:{rng.randint(0, 59):02d}Z ERROR {rng.choice(ERRORS)}"
        else:
            line = (f"2026-11-23T15:00:{rng.randint(0, 59):02d}Z INFO GET /api/v1/orders/{rng.randint(1, 99999)} "
                    f"status=200 duration_ms={rng.randint(1, 900)} user=u{rng.randint(1, 5000)} trace={rng.getrandbits(64):016x}")
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) + "\n"


def timed(fn, text: str, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    inputs = {
        "realistic": realistic(SIZE),
        "one_line_keyword_fragments": ("connection " * (SIZE // 11 + 1))[:SIZE],
        "every_line_hits": ("ERROR timeout connection refused redis error exit code 1 permission denied\n" * (SIZE // 77 + 1))[:SIZE],
        "one_line_widest_gap": ("environment variable " * (SIZE // 21 + 1))[:SIZE],
    }
    results: dict[str, object] = {"size_mb": SIZE / 1e6}
    for name, text in inputs.items():
        analyze = timed(analyze_logs, text, repeat=3 if name == "realistic" else 1)
        baseline = timed(str.splitlines, text)
        mb = len(text.encode()) / 1e6
        results[name] = {
            "analyze_s": round(analyze, 3),
            "analyze_mb_per_s": round(mb / analyze, 1),
            "splitlines_mb_per_s": round(mb / baseline, 1),
            "ratio_vs_splitlines": round(analyze / baseline, 1),
            "matches": sum(analyze_logs(text).counts.values()) if name == "realistic" else None,
        }
        print(name, results[name], file=sys.stderr)
    # Linearity: the realistic log at 1, 2.5, 5 and 10 MB (time per MB should stay flat).
    per_mb = []
    for size_mb in (1, 2.5, 5, 10):
        text = inputs["realistic"][: int(size_mb * 1024 * 1024)]
        per_mb.append(round(timed(analyze_logs, text) / size_mb * 1000, 1))
    results["realistic_ms_per_mb_at_1_2.5_5_10_mb"] = per_mb
    print(json.dumps(results))


if __name__ == "__main__":
    main()
