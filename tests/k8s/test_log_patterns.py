"""Log patterns on log text as real crashes print it."""

from __future__ import annotations

import time

import pytest

from k8s.log_patterns import PATTERNS, analyze_logs, explain_exit_code

# One real-looking line per pattern (the seed's 14 plus the ones real crashes show).
SAMPLES = {
    "oom": 'Exception in thread "main" java.lang.OutOfMemoryError: Java heap space',
    "segfault": "Segmentation fault (core dumped)",
    "panic": "panic: runtime error: invalid memory address or nil pointer dereference",
    "java_stack_trace": "\tat com.shop.OrderService.place(OrderService.java:42)",
    "python_traceback": "Traceback (most recent call last):",
    "unhandled_exception": "Unhandled exception. System.InvalidOperationException: Unable to resolve service for type 'IOrderStore'",
    "connection_refused": "dial tcp 10.96.0.12:5432: connect: connection refused",
    "timeout": "context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
    "dns_failure": "dial tcp: lookup redis.cache.svc.cluster.local on 10.96.0.10:53: no such host",
    "tls_error": "x509: certificate has expired or is not yet valid: current time 2026-11-23T15:00:00Z is after 2026-11-01T00:00:00Z",
    "auth_failure": 'FATAL:  password authentication failed for user "shop"',
    "disk_full": "OSError: [Errno 28] No space left on device: '/data/cache.db'",
    "file_not_found": "FileNotFoundError: [Errno 2] No such file or directory: '/etc/app/config.yaml'",
    "port_in_use": "Error: listen EADDRINUSE: address already in use :::8080",
    "database_error": "psycopg.OperationalError: connection failed: FATAL:  database \"shop\" does not exist",
    "missing_config": "KeyError: 'DATABASE_URL'",
    "permission_denied": "PermissionError: [Errno 13] Permission denied: '/var/lib/app'",
    "exit_code": "Process exited with code 127",
}


@pytest.mark.parametrize(("name", "line"), sorted(SAMPLES.items()))
def test_each_pattern_recognises_what_real_logs_print(name: str, line: str) -> None:
    analysis = analyze_logs(f"starting up\n{line}\nbye\n")
    found = [m for m in analysis.matches if m.pattern == name]
    assert found, f"{name} not found in {line!r}: {analysis.matches}"
    assert found[0].line == 2
    assert found[0].text == line
    assert found[0].explanation


def test_every_pattern_has_a_sample_and_keywords() -> None:
    assert {p.name for p in PATTERNS} == set(SAMPLES)
    assert len(PATTERNS) >= 17
    for pattern in PATTERNS:
        assert pattern.keywords and all(k == k.lower() for k in pattern.keywords), pattern.name


def test_a_python_crash_is_read_line_by_line() -> None:
    log = (
        "2026-11-23 15:00:00 INFO booting\n"
        "Traceback (most recent call last):\n"
        '  File "/app/main.py", line 12, in <module>\n'
        '    url = os.environ["DATABASE_URL"]\n'
        "KeyError: 'DATABASE_URL'\n"
    )
    analysis = analyze_logs(log)
    assert [(m.pattern, m.line) for m in analysis.matches] == [("python_traceback", 2), ("missing_config", 5)]
    assert analysis.lines == 5
    assert analysis.counts == {"python_traceback": 1, "missing_config": 1}


def test_healthy_logs_match_nothing() -> None:
    log = "\n".join(f"2026-11-23T15:00:{i:02d}Z INFO GET /api/orders 200 12ms timeout_ms=3000" for i in range(60))
    assert analyze_logs(log).matches == []
    assert analyze_logs("").matches == []


@pytest.mark.parametrize(
    ("code", "words"),
    [(1, "general error"), (126, "cannot be executed"), (127, "command not found"), (137, "SIGKILL"),
     (139, "segmentation fault"), (143, "SIGTERM")],
)
def test_exit_codes_are_explained(code: int, words: str) -> None:
    assert words in (explain_exit_code(code) or "")
    match = analyze_logs(f"container exited with code {code}").matches[0]
    assert words in match.explanation


def test_unknown_exit_codes_have_no_invented_meaning() -> None:
    assert explain_exit_code(300) is None
    assert "SIGHUP" in (explain_exit_code(129) or "")


def test_repeated_errors_are_counted_but_only_a_few_kept() -> None:
    analysis = analyze_logs("connection refused\n" * 1000)
    assert analysis.counts["connection_refused"] == 1000
    assert len(analysis.matches) == 20 and analysis.truncated
    assert analysis.matches[-1].line == 20


@pytest.mark.parametrize(
    "unit",
    ["connection ", "environment variable ", "timeout " * 30 + "\n", "Exception in thread \"" + "a" * 50],
    ids=["keyword-fragments", "widest-gap", "keyword-every-line", "long-java-lines"],
)
def test_time_grows_linearly_on_adversarial_input(unit: str) -> None:
    # The kinds of input that make backtracking regexes go quadratic. Quadrupling the input must
    # roughly quadruple the time (quadratic would make it 16x); the wide margin and the best of 5
    # ride out a busy 2-core machine, where a 10 ms measurement can take twice as long at random.
    def best(text: str) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            analyze_logs(text)
            times.append(time.perf_counter() - started)
        return min(times)

    small = unit * (100_000 // len(unit))
    assert best(small * 4) / best(small) < 8.0


def test_lines_prefixed_with_timestamps_still_match() -> None:
    # `kubectl logs --timestamps` and most log shippers put a timestamp before every line.
    log = (
        "2026-11-23T15:00:00.000000001Z Traceback (most recent call last):\n"
        "2026-11-23T15:00:00.000000002Z panic: runtime error: index out of range\n"
        "2026-11-23T15:00:00.000000003Z \tat com.shop.Cart.add(Cart.java:17)\n"
    )
    assert [(m.pattern, m.line) for m in analyze_logs(log).matches] == [
        ("python_traceback", 1), ("panic", 2), ("java_stack_trace", 3)]
