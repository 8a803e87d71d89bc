"""Container logs that read like the real thing for each runtime and each fault.

A log is a function of (runtime, app, state, instance start time), so the same container
instance always shows the same lines and `--previous` shows the instance before it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

_STARTUP = {
    "python": [
        "[{t}] [1] [INFO] Starting gunicorn 23.0.0",
        "[{t}] [1] [INFO] Listening at: http://0.0.0.0:8080 (1)",
        "[{t}] [1] [INFO] Using worker: gthread",
        "[{t}] [7] [INFO] Booting worker with pid: 7",
    ],
    "go": [
        '{{"level":"info","ts":"{t}","caller":"cmd/main.go:41","msg":"starting {app}","version":"1.8.2"}}',
        '{{"level":"info","ts":"{t}","caller":"server/http.go:88","msg":"listening","addr":":8080"}}',
    ],
    "node": [
        "{t} info: {app} starting in production mode",
        "{t} info: connected to redis at redis.shop.svc.cluster.local:6379",
        "{t} info: listening on http://0.0.0.0:8080",
    ],
    "java": [
        "{t}  INFO 1 --- [           main] c.e.{app}.Application : Starting Application v3.2.1 using Java 21.0.5 with PID 1",
        "{t}  INFO 1 --- [           main] o.s.b.w.embedded.tomcat.TomcatWebServer  : Tomcat initialized with port 8080 (http)",
        "{t}  INFO 1 --- [           main] c.e.{app}.Application : Started Application in 6.412 seconds (process running for 7.03)",
    ],
}

_TRAFFIC = {
    "python": '10.244.1.1 - - [{t}] "GET /api/v1/orders?page={i} HTTP/1.1" 200 {n} "-" "kube-probe/1.32"',
    "go": '{{"level":"info","ts":"{t}","caller":"server/http.go:131","msg":"request","method":"GET","path":"/v1/items/{i}","status":200,"duration_ms":{d}}}',
    "node": '{t} info: GET /cart/{i} 200 {d}ms',
    "java": "{t}  INFO 1 --- [nio-8080-exec-{d}] c.e.{app}.web.RequestLogger : GET /api/accounts/{i} -> 200 in {d}ms",
}

_CRASH = {
    "python": [
        "[{t}] [7] [ERROR] Exception in worker process",
        "Traceback (most recent call last):",
        '  File "/usr/local/lib/python3.12/site-packages/gunicorn/arbiter.py", line 608, in spawn_worker',
        "    worker.init_process()",
        '  File "/app/{app}/db.py", line 27, in connect',
        "    return psycopg.connect(settings.DATABASE_URL, connect_timeout=5)",
        '  File "/usr/local/lib/python3.12/site-packages/psycopg/connection.py", line 119, in connect',
        "    raise last_ex.with_traceback(None)",
        'psycopg.OperationalError: connection failed: connection to server at "10.96.0.23", port 5432 failed: Connection refused',
        "\tIs the server running on that host and accepting TCP/IP connections?",
        "[{t}] [1] [ERROR] Worker (pid:7) exited with code 3",
        "[{t}] [1] [ERROR] Shutting down: Master",
        "[{t}] [1] [ERROR] Reason: Worker failed to boot.",
    ],
    "go": [
        '{{"level":"info","ts":"{t}","caller":"cache/client.go:52","msg":"connecting to cache","addr":"redis:6379"}}',
        "panic: runtime error: invalid memory address or nil pointer dereference",
        "[signal SIGSEGV: segmentation violation code=0x1 addr=0x18 pc=0x8a1c2e]",
        "",
        "goroutine 1 [running]:",
        "github.com/example/{app}/internal/cache.(*Client).Get(0x0, {{0xc0001a2000, 0x10}})",
        "\t/src/internal/cache/client.go:77 +0x2e",
        "main.main()",
        "\t/src/cmd/main.go:63 +0x3a5",
        "exit status 2",
    ],
    "node": [
        "{t} error: Redis connection to redis.shop.svc.cluster.local:6379 failed",
        "Error: connect ECONNREFUSED 10.96.0.31:6379",
        "    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1607:16) {{",
        "  errno: -111,",
        "  code: 'ECONNREFUSED',",
        "  syscall: 'connect',",
        "  address: '10.96.0.31',",
        "  port: 6379",
        "}}",
        "npm ERR! code 1",
        "npm ERR! command failed",
    ],
    "java": [
        "{t} ERROR 1 --- [           main] o.s.boot.SpringApplication : Application run failed",
        "org.springframework.beans.factory.BeanCreationException: Error creating bean with name 'dataSource'",
        "Caused by: org.postgresql.util.PSQLException: Connection to postgres.data.svc.cluster.local:5432 refused. "
        "Check that the hostname and port are correct and that the postmaster is accepting TCP/IP connections.",
        "\tat org.postgresql.core.v3.ConnectionFactoryImpl.openConnectionImpl(ConnectionFactoryImpl.java:352)",
        "Caused by: java.net.ConnectException: Connection refused",
        "\tat java.base/sun.nio.ch.Net.pollConnect(Native Method)",
    ],
}

_OOM = {
    "java": [
        "{t}  WARN 1 --- [           main] c.e.{app}.ReportBuilder : loading 1843211 rows into memory for monthly aggregation",
        "[{t}][gc] GC(212) Pause Full (G1 Compaction Pause) 247M->246M(256M) 812.311ms",
        "[{t}][gc] GC(213) Pause Full (G1 Compaction Pause) 251M->251M(256M) 904.027ms",
        'Exception in thread "report-worker-1" java.lang.OutOfMemoryError: Java heap space',
        "\tat java.base/java.util.Arrays.copyOf(Arrays.java:3541)",
        "\tat java.base/java.util.ArrayList.grow(ArrayList.java:237)",
        "\tat com.example.{app}.ReportBuilder.aggregate(ReportBuilder.java:118)",
    ],
    "python": [
        "[{t}] [7] [WARNING] cache warm-up: loaded 1200000 keys, rss=231MiB",
        "[{t}] [7] [WARNING] cache warm-up: loaded 1600000 keys, rss=254MiB",
    ],
    "go": [
        '{{"level":"warn","ts":"{t}","caller":"ingest/buffer.go:64","msg":"buffer growing","bytes":251658240}}',
    ],
    "node": [
        "{t} warn: heap usage 243MB of 256MB",
        "<--- Last few GCs --->",
        "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
    ],
}

# The probe_failure fault changes the template's probe; the process answers the probe's requests
# with 503 and names no dependency (a readiness check that fails because a dependency is down is
# that dependency's failure, and the RCA says so).
_PROBE = {
    "python": '10.244.0.1 - - [{t}] "GET /ready HTTP/1.1" 503 61 "-" "kube-probe/1.32"',
    "go": '{{"level":"warn","ts":"{t}","caller":"server/http.go:88","msg":"request","method":"GET","path":"/ready","status":503,"user_agent":"kube-probe/1.32"}}',
    "node": "{t} warn: GET /ready 503 2.104 ms - kube-probe/1.32",
    "java": "{t}  WARN 1 --- [nio-8080-exec-3] o.s.b.a.a.ReadinessStateHealthIndicator  : Readiness state is REFUSING_TRAFFIC",
}

# A process its liveness probe kills: it hangs (work stalls, the probe times out), gets SIGTERM
# and, still stuck, SIGKILL after the grace period (exit 137, reason Error): no crash, no trace.
_HANG = {
    "python": [
        "[{t}] [7] [WARNING] connection pool exhausted (size=10, in use=10): waiting for a free connection",
        "[{t}] [7] [WARNING] connection pool exhausted (size=10, in use=10): waiting for a free connection",
        "[{t}] [1] [INFO] Handling signal: term",
    ],
    "go": [
        '{{"level":"warn","ts":"{t}","caller":"server/http.go:140","msg":"request still running","method":"GET","path":"/v1/items","elapsed":"28.1s"}}',
        '{{"level":"warn","ts":"{t}","caller":"server/http.go:140","msg":"request still running","method":"GET","path":"/v1/items","elapsed":"31.4s"}}',
        '{{"level":"info","ts":"{t}","caller":"cmd/main.go:77","msg":"shutting down","signal":"terminated","grace":"30s"}}',
    ],
    "node": [
        "{t} warn: event loop blocked for 28412ms",
        "{t} info: SIGTERM received, closing server",
    ],
    "java": [
        "{t}  WARN 1 --- [l-1 housekeeper] com.zaxxer.hikari.pool.HikariPool : HikariPool-1 - Thread starvation or clock leap detected (housekeeper delta=31s).",
        "{t}  INFO 1 --- [ionShutdownHook] o.s.b.w.e.tomcat.GracefulShutdown : Commencing graceful shutdown. Waiting for active requests to complete",
    ],
}

_JOB_FAIL = [
    "{t} INFO starting nightly export for {app}",
    "{t} INFO fetching rows from warehouse",
    "Traceback (most recent call last):",
    '  File "/app/export.py", line 88, in <module>',
    "    main()",
    '  File "/app/export.py", line 71, in main',
    '    upload(path, bucket=os.environ["EXPORT_BUCKET"])',
    '  File "<frozen os>", line 714, in __getitem__',
    "KeyError: 'EXPORT_BUCKET'",
]
_JOB_OK = ["{t} INFO starting nightly export for {app}", "{t} INFO exported 48213 rows", "{t} INFO done in 41.2s"]


def terminated_state(terminated: dict[str, Any], container: dict[str, Any] | None) -> str:
    """Which story a terminated container instance's log tells. A SIGKILL/SIGTERM exit with
    reason Error of a container with a liveness probe is the kubelet's kill of a hung process
    (the kernel's OOM kill says OOMKilled); any other exit is a crash."""
    if terminated.get("reason") == "OOMKilled":
        return "oom_killed"
    if (terminated.get("reason") == "Error" and terminated.get("exitCode") in (137, 143)
            and (container or {}).get("livenessProbe")):
        return "liveness_kill"
    return "crash_loop"


def _fmt(runtime: str, t: datetime) -> str:
    if runtime == "python":
        return t.strftime("%Y-%m-%d %H:%M:%S +0000")
    if runtime == "java":
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def render(runtime: str, app: str, state: str, started: datetime, *, seed: int = 0) -> list[tuple[datetime, str]]:
    """(timestamp, line) pairs for one container instance."""
    runtime = runtime if runtime in _STARTUP else "python"
    lines: list[tuple[datetime, str]] = []
    t = started

    def emit(template: str, **extra: object) -> None:
        nonlocal t
        t = t + timedelta(milliseconds=137 + (len(lines) * 211 + seed) % 900)
        lines.append((t, template.format(t=_fmt(runtime, t), app=app, **extra)))

    if state in ("job_failed", "job_succeeded"):
        for template in _JOB_FAIL if state == "job_failed" else _JOB_OK:
            emit(template)
        return lines
    for template in _STARTUP[runtime]:
        emit(template)
    if state == "crash_loop":
        for template in _CRASH[runtime]:
            emit(template)
        return lines
    if state == "liveness_kill":
        for i in range(3):
            emit(_TRAFFIC[runtime], i=seed % 97 + i, n=512 + i * 13, d=3 + (seed + i) % 40)
        # The stall builds up until the probe gives up (30 s with the defaults) and SIGTERM comes;
        # then nothing: the process never exits on its own, SIGKILL ends it after the grace period.
        hang = _HANG[runtime]
        for k, template in enumerate(hang):
            t = max(t, started + timedelta(seconds=30 - 4 * (len(hang) - 1 - k)))
            emit(template)
        return lines
    traffic = 6 if state != "oom_killed" else 3
    for i in range(traffic):
        emit(_TRAFFIC[runtime], i=seed % 97 + i, n=512 + i * 13, d=3 + (seed + i) % 40)
    if state == "oom_killed":
        for template in _OOM[runtime]:
            emit(template)
    elif state == "probe_failure":
        for _ in range(4):
            emit(_PROBE[runtime])
    return lines
