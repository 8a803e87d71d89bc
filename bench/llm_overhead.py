"""What our LLM client and redaction add to a request, against their baselines in the same run.

1. `agents.llm.complete()` (alias resolution, the Redis circuit breaker, retries wrapper,
   metrics, logs) vs a bare `openai` SDK call, both against the local fake OpenAI server
   (tests/fakes/openai_server.py) answering at once: the overhead per LLM call.
2. `Redactor().redact()` on 1 MB of realistic container log (access lines, errors, ~1% lines with
   secrets) vs `k8s.log_patterns.analyze_logs()` on the same text (the other pass every log gets).
3. The structlog redaction processor per log event, vs the same event through the other processors.

Run (needs PostgreSQL and Redis; the embedded ones):
  AIOPS_DB_USER=postgres .venv/bin/python -m aiops_site.embedded --run-dir .run/bench-llm -- \
      sh -c '.venv/bin/python manage.py migrate -v0 && .venv/bin/python bench/llm_overhead.py'
Last line: one JSON object.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.fakes.openai_server import FakeOpenAI, text  # noqa: E402

CALLS = int(os.environ.get("BENCH_CALLS", "300"))
fake = FakeOpenAI()
fake.respond_with(lambda request: text("ok"))
os.environ.update(LLM_BASE_URL=fake.url, LLM_API_KEY="bench", LLM_DEFAULT_MODEL="bench-model", AIOPS_LOG_LEVEL="WARNING")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")

import django  # noqa: E402

django.setup()

import openai  # noqa: E402

from agents import llm  # noqa: E402
from agents.redaction import Redactor, redact_log_event  # noqa: E402
from k8s.log_patterns import analyze_logs  # noqa: E402

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "How are my pods?"}]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3), "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 3)}


def time_calls(call) -> list[float]:  # type: ignore[no-untyped-def]
    for _ in range(20):  # warm-up: connections, imports, caches
        call()
    samples = []
    for _ in range(CALLS):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def llm_overhead() -> dict[str, object]:
    llm.CircuitBreaker(fake.url).reset()
    bare_client = openai.OpenAI(base_url=fake.url, api_key="bench", max_retries=0, timeout=60)
    bare = time_calls(lambda: bare_client.chat.completions.create(model="bench-model", messages=MESSAGES))
    ours = time_calls(lambda: llm.complete(MESSAGES, alias="bench-model"))
    b, o = percentiles(bare), percentiles(ours)
    return {"calls": CALLS, "bare_sdk": b, "ours": o, "overhead_p50_ms": round(o["p50_ms"] - b["p50_ms"], 3),
            "ratio_p50": round(o["p50_ms"] / b["p50_ms"], 2)}


def realistic_log(size: int) -> str:
    rng = random.Random(6)
    lines, total = [], 0
    secrets = [
        "GET /v1/orders Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlMTIz",
        "connecting to postgres://orders:Sup3rS3cret@db.payments:5432/orders",
        "config loaded: DB_PASSWORD=hunter2hunter2 REDIS_URL=redis://cache:6379",
        "notify ops-lead@example.com about the failed export",
    ]
    while total < size:
        r = rng.random()
        if r < 0.01:
            line = f"2026-11-23T15:00:{rng.randint(0, 59):02d}Z WARN {rng.choice(secrets)}"
        elif r < 0.03:
            line = "psycopg.OperationalError: connection failed: connection to server at \"10.96.0.23\", port 5432 failed: Connection refused"
        else:
            line = (f'10.244.1.{rng.randint(1, 254)} - - [23/Nov/2026:15:00:{rng.randint(0, 59):02d} +0000] '
                    f'"GET /api/v1/orders?page={rng.randint(1, 500)} HTTP/1.1" 200 {rng.randint(200, 9000)} "-" "kube-probe/1.32"')
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)


def redaction_throughput() -> dict[str, object]:
    log = realistic_log(1024 * 1024)
    mb = len(log) / (1024 * 1024)

    def best_of(fn) -> float:  # type: ignore[no-untyped-def]
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - started)
        return min(runs)

    redact_s = best_of(lambda: Redactor().redact(log))
    analyze_s = best_of(lambda: analyze_logs(log))
    redacted = Redactor().redact(log)
    leaked = [s for s in ("Sup3rS3cret", "hunter2hunter2", "ops-lead@example.com", "c2lnbmF0dXJlMTIz") if s in redacted]
    return {"mb": round(mb, 2), "redact_ms": round(redact_s * 1000, 1), "redact_mb_per_s": round(mb / redact_s, 1),
            "analyze_logs_ms": round(analyze_s * 1000, 1), "ratio_vs_analyze_logs": round(redact_s / analyze_s, 2),
            "leaked": leaked}


def log_processor_cost() -> dict[str, object]:
    plain = {"event": "poll_finished", "cluster": "prod-eu", "pods": 1200, "findings": 3, "duration_ms": 812}
    secret = {"event": "connecting", "dsn": "postgres://app:s3cr3t@db/x", "password": "hunter2", "attempt": 2}
    n = 20000

    def per_event(event: dict[str, object]) -> float:
        started = time.perf_counter()
        for _ in range(n):
            redact_log_event(None, "info", dict(event))
        return (time.perf_counter() - started) / n

    def copy_only(event: dict[str, object]) -> float:
        started = time.perf_counter()
        for _ in range(n):
            dict(event)
        return (time.perf_counter() - started) / n

    return {"plain_event_us": round((per_event(plain) - copy_only(plain)) * 1e6, 2),
            "event_with_secrets_us": round((per_event(secret) - copy_only(secret)) * 1e6, 2)}


if __name__ == "__main__":
    result = {"llm_call": llm_overhead(), "redaction_1mb_log": redaction_throughput(), "log_processor": log_processor_cost()}
    fake.close()
    print(json.dumps(result))
