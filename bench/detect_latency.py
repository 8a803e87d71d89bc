"""Time to detect: fault -> incident row -> first outbound message, with the watcher and poll-only.

One run, real parts: a sandbox in its own process (TLS + token, like an API server; the demo
scenario plus its scale generator: 10,000 pods), the embedded PostgreSQL and Redis, one real
Celery worker and the `outbound` process beside it (`--no-outbound`: the worker alone delivers,
as before the deliveries had a queue of their own), Celery beat (it fires the 30-second poll), a fake
Telegram Bot API in this process (tests/fakes: the real client's wire format) as the channel,
and `manage.py watch` in its own process.

  watch phase  the watcher and the poll both run; `--faults` faults of mixed types are injected
               one by one, each on a healthy workload; for each, the time from just before the
               injection to its incident's row being visible in PostgreSQL, and to the first
               message about that incident being delivered to the fake (its delivered_at);
  churn        1,000 pods are deleted (their replacements scheduled): the watcher's CPU per
               1,000 watch events;
  poll phase   the watcher is stopped (SIGTERM: it hands its lease back); the same number of
               faults on other workloads, now seen only by the poll.

The watcher's peak RSS is its VmHWM (/proc), CPU from /proc/<pid>/stat, events from its
metrics port.

Run:
  AIOPS_DB_USER=postgres .venv/bin/python -m aiops_site.embedded --run-dir .run/bench-detect -- .venv/bin/python bench/detect_latency.py
Last line: one JSON object (incident_p95_s, message_p95_s, poll_only_incident_p95_s,
poll_only_message_p95_s, watcher_peak_rss_mb, watcher_cpu_ms_per_1000_events, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.telegram_server import FakeTelegram  # noqa: E402

TOKEN = "123456:BENCH-detect"
CHAT = "-100500600"
FAULT_TYPES = ("crash_loop", "oom_killed", "image_pull_failure", "not_ready_node", "unschedulable",
               "replication_failure", "probe_failure", "evicted", "hpa_maxed", "failed_job")

SANDBOX = """
import json, logging, sys, time
import structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                    logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from k8s.sandbox import Sandbox
from k8s.sandbox import objects as o
pods, extra = int(sys.argv[2]), int(sys.argv[3])
# No simulation loop: at 10,000 pods a step holds the store's lock for seconds, during which the
# sandbox delays every watch event and list (a real API server does not). Faults apply when injected.
sb = Sandbox(tls=True, state_dir=sys.argv[1], scenario="demo").start()
for target in ("payments/ledger", "data/report-builder", "node-4"):
    sb.clear(target)
with sb.sim.lock:
    demo_pods = len(sb.sim.store.all("pods"))
made = sb.generate(pods - demo_pods, nodes=60, deployments=max(100, pods // 10))
with sb.sim.lock:
    for i in range(extra):  # HPAs and Jobs to break (the generator makes neither)
        sb.sim.store.create("horizontalpodautoscalers", o.hpa(f"scale-{i % 10:02d}", f"hpa-{i}", f"svc-{i:05d}",
                                                               min_replicas=10, max_replicas=12))
        sb.sim.store.create("jobs", o.job(f"scale-{i % 10:02d}", f"export-{i}", "registry.example.com/etl:1.0"))
    sb.sim.reconcile()
    total = len(sb.sim.store.all("pods"))
print("BENCH-READY " + json.dumps({"kubeconfig": str(sb.kubeconfig), "made": made, "pods": total}), flush=True)
for line in sys.stdin:
    cmd, *args = line.split()
    try:
        if cmd == "fault":
            sb.fault(args[0], args[1])  # returns once every object the fault changes is written
        elif cmd == "churn":
            with sb.sim.lock:
                victims = [p for p in sb.sim.store.all("pods") if p["metadata"]["namespace"].startswith("scale-")][: int(args[0])]
                for pod in victims:
                    sb.sim.delete_pod(pod)
                sb.sim.reconcile()
        print("OK " + repr(time.time()), flush=True)
    except Exception as exc:
        print("ERR " + str(exc).replace(chr(10), " "), flush=True)
sb.stop()
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    from django.conf import settings

    from tests.conftest import database_url

    return {
        **os.environ,
        "DATABASE_URL": database_url(settings.DATABASES["default"]),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
        "AIOPS_SECRET_KEY": settings.SECRET_KEY,
        "AIOPS_LOG_FORMAT": "json",
        "AIOPS_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }


def start(name: str, args: list[str], log_dir: Path, ready: bytes | None, env: dict[str, str],
          timeout: float = 120) -> subprocess.Popen[bytes]:
    log_path = log_dir / f"{name}.log"
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    deadline = time.monotonic() + timeout
    while ready and ready not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"{name} did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    return process


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS MB, CPU seconds) of a process from /proc."""
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return peak, (int(fields[11]) + int(fields[12])) / ticks


def scrape_events(port: int, family: str = "aiops_watcher_events_total") -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()  # noqa: S310
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(family + "{"))


def histogram_mean_ms(port: int, family: str) -> float | None:
    count = scrape_events(port, family + "_count")
    return round(scrape_events(port, family + "_sum") / count * 1000, 1) if count else None


class SandboxProcess:
    def __init__(self, state_dir: str, pods: int, extra: int) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", SANDBOX, state_dir, str(pods), str(extra)], cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "AIOPS_LOG_LEVEL": "WARNING"})
        line = ""
        while not line.startswith("BENCH-READY"):
            line = self.process.stdout.readline()  # type: ignore[union-attr]
            if not line and self.process.poll() is not None:
                raise SystemExit("the sandbox exited before it was ready")
        self.info = json.loads(line.split(" ", 1)[1])

    def command(self, text: str) -> float:
        """Run a command in the sandbox; the time it finished (the fault is visible in the API)."""
        self.process.stdin.write(text + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        answer = ""
        while not answer.startswith(("OK", "ERR")):
            answer = self.process.stdout.readline().strip()  # type: ignore[union-attr]
            if not answer and self.process.poll() is not None:
                raise SystemExit(f"the sandbox exited while doing {text!r}")
        if not answer.startswith("OK "):
            raise SystemExit(f"sandbox refused {text!r}: {answer}")
        return float(answer.split()[1])

    def stop(self) -> None:
        self.process.stdin.close()  # type: ignore[union-attr]
        self.process.wait(60)


def plan(offset: int, count: int) -> list[tuple[str, str, tuple[str, str, str]]]:
    """(fault, target, the workload key its incident opens under), on workloads never broken before."""
    faults = []
    for i in range(count):
        n = offset + i
        kind = FAULT_TYPES[i % len(FAULT_TYPES)]
        ns = f"scale-{n % 10:02d}"
        if kind == "not_ready_node":
            node = f"scale-node-{10 + n:04d}"
            faults.append((kind, node, ("Node", "", node)))
        elif kind == "hpa_maxed":
            faults.append((kind, f"{ns}/hpa-{n}", ("Deployment", ns, f"svc-{n:05d}")))
        elif kind == "failed_job":
            faults.append((kind, f"{ns}/export-{n}", ("Job", ns, f"export-{n}")))
        else:
            svc = f"svc-{100 + n:05d}"
            ns = f"scale-{(100 + n) % 10:02d}"
            faults.append((kind, f"{ns}/{svc}", ("Deployment", ns, svc)))
    return faults


def measure(sandbox: SandboxProcess, faults: list[tuple[str, str, tuple[str, str, str]]], label: str,
            timeout: float) -> list[dict[str, Any]]:
    from django.utils import timezone

    from channels.models import OutboundMessage
    from playbooks.models import Incident

    rows = []
    for fault, target, (kind, ns, name) in faults:
        since = timezone.now()
        called = time.time()
        # Latency counts from the moment the fault is in the API: the sandbox's injection call
        # returns once every object it changes is written (a few seconds at 10,000 pods, the
        # simulator's own reconcile; reported apart as `inject_s`).
        started = sandbox.command(f"fault {fault} {target}")
        incident_s = message_s = opened_s = None
        source = ""
        deadline = time.time() + timeout
        incident = None
        while time.time() < deadline and (incident_s is None or message_s is None):
            if incident is None:
                incident = (Incident.objects.filter(workload_kind=kind, namespace=ns, workload_name=name,
                                                    opened_at__gte=since).order_by("pk").first())
                if incident is not None:
                    incident_s, source = time.time() - started, incident.source
                    opened_s = incident.opened_at.timestamp() - started
            if incident is not None and message_s is None:
                delivered = (OutboundMessage.objects.filter(incident_id=incident.pk, delivered_at__isnull=False)
                             .order_by("delivered_at").values_list("delivered_at", flat=True).first())
                if delivered is not None:
                    message_s = delivered.timestamp() - started
            time.sleep(0.02)
        # opened_s: when the ingest that opened it began (its transaction's `now`): the rest of
        # incident_s is that transaction (locks, writes, the receivers, commit) and this loop's 20 ms.
        row = {"fault": fault, "target": target, "incident_s": incident_s, "message_s": message_s, "source": source,
               "opened_s": None if opened_s is None else round(opened_s, 3), "inject_s": round(started - called, 3)}
        print(f"{label}: {json.dumps(row)}", flush=True)
        rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    incidents = [r["incident_s"] for r in rows if r["incident_s"] is not None]
    messages = [r["message_s"] for r in rows if r["message_s"] is not None]
    return {
        "faults": len(rows),
        "missed_incidents": len(rows) - len(incidents),
        "missed_messages": len(rows) - len(messages),
        "incident_p50_s": round(percentile(incidents, 0.5), 3),
        "incident_p95_s": round(percentile(incidents, 0.95), 3),
        "message_p50_s": round(percentile(messages, 0.5), 3),
        "message_p95_s": round(percentile(messages, 0.95), 3),
        "sources": {s: sum(1 for r in rows if r["source"] == s) for s in sorted({r["source"] for r in rows})},
        "inject_p50_s": round(percentile([r["inject_s"] for r in rows], 0.5), 3),
        "opened_p50_s": round(percentile([r["opened_s"] for r in rows if r["opened_s"] is not None], 0.5), 3),
        "opened_p95_s": round(percentile([r["opened_s"] for r in rows if r["opened_s"] is not None], 0.95), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--faults", type=int, default=20)
    parser.add_argument("--poll-faults", type=int, default=None, help="faults in the poll-only phase (default: --faults)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for one fault's incident and message")
    parser.add_argument("--no-outbound", action="store_true",
                        help="no outbound process: the worker alone delivers (the comparison)")
    args = parser.parse_args()
    poll_faults = args.faults if args.poll_faults is None else args.poll_faults

    fake = FakeTelegram(TOKEN)
    channel_env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": "bench-secret",
                   "TELEGRAM_API_BASE_URL": fake.base_url, "AIOPS_AUTO_REMEDIATION": "false",
                   # No model here: RCA steps fail fast instead of waiting on an unreachable endpoint.
                   "LLM_BASE_URL": "http://127.0.0.1:9/v1",
                   # 20 faults in about a minute is a storm to channels' storm control (more than 10
                   # incidents in 60 s: one summary, then no message of their own for warnings);
                   # this bench measures each incident's own first message.
                   "AIOPS_STORM_THRESHOLD": "1000"}
    os.environ.update({"DJANGO_SETTINGS_MODULE": "aiops_site.settings", "AIOPS_LOG_LEVEL": "WARNING", **channel_env})
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import redis
    from django.conf import settings
    from django.utils import timezone

    from aiops_site.celery import app
    from channels.models import ChannelTarget
    from k8s.models import Cluster
    from playbooks.models import Incident

    app.control.purge()
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    # Incidents a previous run left open would be refreshed instead of opened: close them.
    Incident.objects.filter(state="open").update(state="resolved", resolved_at=timezone.now())
    ChannelTarget.objects.update_or_create(name="bench-oncall", defaults={
        "kind": "telegram", "address": CHAT, "min_severity": "warning", "enabled": True, "approvals": False})

    logs = Path(tempfile.mkdtemp(prefix="bench-detect-"))
    print(f"logs in {logs}", flush=True)
    started_at = time.monotonic()
    sandbox = SandboxProcess(str(logs / "sandbox"), args.pods, extra=args.faults + poll_faults + 4)
    print(f"sandbox: {sandbox.info}", flush=True)
    Cluster.objects.exclude(name="bench").update(enabled=False)
    cluster, _ = Cluster.objects.update_or_create(name="bench", defaults={
        "kubeconfig_path": sandbox.info["kubeconfig"], "enabled": True, "is_default": False,
        "detection_mode": "poll", "watcher": ""})
    env = child_env(channel_env)
    from tests.conftest import free_port

    metrics_port = free_port()
    processes = {
        "worker": start("worker", [sys.executable, "-m", "celery", "-A", "aiops_site", "worker", "--concurrency", "2",
                                   "--loglevel", "INFO", "--without-heartbeat", "--without-mingle", "--without-gossip",
                                   "--hostname", f"bench-detect-{os.getpid()}@%h"], logs, b"ready.", env),
        "beat": start("beat", [sys.executable, "-m", "celery", "-A", "aiops_site", "beat", "--loglevel", "INFO",
                               "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler", "--pidfile="],
                      logs, None, env),
        **({} if args.no_outbound else {
            "outbound": start("outbound", [sys.executable, "-m", "aiops_site.outbound", "--without-heartbeat",
                                           "--without-mingle", "--without-gossip"], logs, b"ready.", env)}),
        "watch": start("watch", [sys.executable, "manage.py", "watch", "--identity", "bench-watcher"], logs, None,
                       {**env, "AIOPS_WATCH_METRICS_PORT": str(metrics_port)}),
    }
    watcher_pid = processes["watch"].pid
    try:
        deadline = time.monotonic() + 300
        while Cluster.objects.get(pk=cluster.pk).detection_mode != "watch":
            if time.monotonic() > deadline or processes["watch"].poll() is not None:
                raise SystemExit(f"the watcher never streamed:\n{(logs / 'watch.log').read_text()[-3000:]}")
            time.sleep(0.2)
        time.sleep(5)  # the first detector pass over the whole cluster is done
        listed_hwm, cpu_start = proc_stats(watcher_pid)
        events_start = scrape_events(metrics_port)
        watch_rows = measure(sandbox, plan(0, args.faults), "watch", args.timeout)
        _, cpu_mid = proc_stats(watcher_pid)
        events_mid = scrape_events(metrics_port)
        sandbox.command("churn 1000")
        time.sleep(8)
        peak_rss, cpu_end = proc_stats(watcher_pid)
        events_end = scrape_events(metrics_port)
        churn_events = events_end - events_mid
        mark_to_pass_ms = histogram_mean_ms(metrics_port, "aiops_watcher_mark_to_pass_seconds")
        ingest_ms = histogram_mean_ms(metrics_port, "aiops_watcher_ingest_seconds")
        cpu_per_1000 = (cpu_end - cpu_mid) / churn_events * 1000 if churn_events else float("nan")
        # Poll only: the watcher hands its lease back and the row says so.
        processes["watch"].send_signal(signal.SIGTERM)
        processes["watch"].wait(60)
        if Cluster.objects.get(pk=cluster.pk).detection_mode != "poll":
            raise SystemExit("the cluster row still says watch after the watcher stopped")
        poll_rows = measure(sandbox, plan(args.faults, poll_faults), "poll-only", args.timeout)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        sandbox.stop()

    watch = summary(watch_rows)
    poll_only = summary(poll_rows)
    result = {
        "pods": sandbox.info["pods"],
        "poll_interval_s": settings.AIOPS_POLL_INTERVAL,
        "watch_window_s": settings.AIOPS_WATCH_WINDOW,
        "watch_lead_s": settings.AIOPS_WATCH_LEAD,
        "outbound_process": not args.no_outbound,
        "incident_p95_s": watch["incident_p95_s"],
        "message_p95_s": watch["message_p95_s"],
        "incident_p50_s": watch["incident_p50_s"],
        "message_p50_s": watch["message_p50_s"],
        "poll_only_incident_p95_s": poll_only["incident_p95_s"],
        "poll_only_message_p95_s": poll_only["message_p95_s"],
        "poll_only_incident_p50_s": poll_only["incident_p50_s"],
        "incident_p95_ratio_poll_to_watch": round(poll_only["incident_p95_s"] / watch["incident_p95_s"], 1)
        if watch["incident_p95_s"] else None,
        "watcher_peak_rss_mb": round(peak_rss, 1),
        "watcher_peak_rss_listed_mb": round(listed_hwm, 1),  # the peak once the cluster is listed, before any fault
        "watcher_mark_to_pass_mean_ms": mark_to_pass_ms,  # every pass, the initial list's included
        "watcher_ingest_mean_ms": ingest_ms,
        "watcher_cpu_ms_per_1000_events": round(cpu_per_1000 * 1000, 1),
        "watcher_cpu_s_during_faults": round(cpu_mid - cpu_start, 2),
        "watch_events_during_faults": int(events_mid - events_start),
        "churn_events": int(churn_events),
        "watch": watch,
        "poll_only": poll_only,
        "wall_s": round(time.monotonic() - started_at, 1),
        "load_average_1m_end": round(os.getloadavg()[0], 1),  # other work on the machine skews every figure
        "goals": {"incident_p95_under_2s": watch["incident_p95_s"] < 2, "message_p95_under_3s": watch["message_p95_s"] < 3,
                  "watcher_rss_under_150mb": peak_rss < 150,
                  "nothing_missed": not (watch["missed_incidents"] or watch["missed_messages"]
                                         or poll_only["missed_incidents"])},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
