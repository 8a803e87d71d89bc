"""Alertmanager batches of 50 posted to the webhook served by gunicorn, as Alertmanager would.

gunicorn runs as the Procfile runs it (2 workers x 4 threads; `--workers/--threads` to compare)
on a free loopback port, with the bearer token set; `--senders` client threads post batches of `--batch` alerts over keep-alive
connections. Alerts are KubePodCrashLooping-style (namespace + pod labels) spread over
`--workloads` deployments, so most alerts land on an incident another batch opened. Each batch is
then posted a second time (Alertmanager's redelivery): it must store nothing new.

Incidents the batches open are announced (correlation, silences, rules, notifications) after
each batch commits, by a task; a real Celery worker runs it here as the Procfile runs one
(`--worker-concurrency`, 2; `--no-worker` to leave the announcements queued), and the run waits
until every opened incident is announced: `announce_p50_s`/`announce_p99_s` are from an
incident's row to its announcement (the worker's `incident_opened` log line).

Run:
  AIOPS_DB_USER=postgres .venv/bin/python -m aiops_site.embedded --run-dir .run/bench-watch -- .venv/bin/python bench/alerts.py
Last line: one JSON object with alerts_per_s, steady_alerts_per_s, p50_ms, p99_ms, sent, stored, lost,
announced, announce_p99_s.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.serve import gunicorn  # noqa: E402

TOKEN = "bench-alertmanager-token"
SAFE = "bcdfghjklmnpqrstvwxz2456789"



def make_batches(total: int, size: int, workloads: int, seed: int = 11) -> list[bytes]:
    rng = random.Random(seed)
    batches = []
    for b in range(0, total, size):
        alerts = []
        for i in range(b, min(b + size, total)):
            d = rng.randrange(workloads)
            pod = f"svc-{d:04d}-{''.join(rng.choices(SAFE, k=9))}-{''.join(rng.choices(SAFE, k=5))}"
            alerts.append({
                "status": "firing",
                "labels": {"alertname": "KubePodCrashLooping", "namespace": f"team-{d % 20:02d}", "pod": pod,
                           "container": "app", "severity": "warning", "job": "kube-state-metrics"},
                "annotations": {"summary": f"Pod {pod} is crash looping", "runbook_url": "https://runbooks.example/crashloop"},
                "startsAt": f"2026-11-23T15:{i // 6000 % 60:02d}:{i // 100 % 60:02d}.{i % 100:03d}Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=kube_pod_container_status_waiting_reason",
                "fingerprint": f"{i:016x}",
            })
        batches.append(json.dumps({
            "receiver": "aiops", "status": "firing", "alerts": alerts, "groupLabels": {"alertname": "KubePodCrashLooping"},
            "commonLabels": {"alertname": "KubePodCrashLooping"}, "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093", "version": "4", "groupKey": f"{{}}:{{batch=\"{b}\"}}",
            "truncatedAlerts": 0,
        }).encode())
    return batches


def send_all(port: int, batches: list[bytes], senders: int) -> tuple[list[float], list[int], list[dict]]:
    latencies: list[float] = []
    statuses: list[int] = []
    bodies: list[dict] = []
    lock = threading.Lock()
    queue = list(enumerate(batches))

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if not queue:
                    break
                _, body = queue.pop()
            started = time.perf_counter()
            conn.request("POST", "/api/webhooks/alertmanager", body=body,
                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
            response = conn.getresponse()
            payload = response.read()
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                statuses.append(response.status)
                if response.status == 200:
                    bodies.append({**json.loads(payload), "done_at": time.perf_counter(), "latency": elapsed})
        conn.close()

    threads = [threading.Thread(target=run) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, statuses, bodies


@contextlib.contextmanager
def celery_worker(env: dict[str, str], concurrency: int, log_path: Path, *, enabled: bool) -> Iterator[None]:
    """A Celery worker as the Procfile runs one (JSON logs at INFO), ready before the run starts."""
    if not enabled:
        yield
        return
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "aiops_site", "worker", "--loglevel", "INFO", "--concurrency",
             str(concurrency), "--hostname", f"bench-alerts-{os.getpid()}@%h", "--without-heartbeat", "--without-mingle",
             "--without-gossip"],
            cwd=ROOT, env={**env, "AIOPS_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while b" ready." not in log_path.read_bytes():
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise SystemExit(f"the worker did not come up:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            yield
        finally:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()


def announce_delays(log_path: Path, opened_at: dict[int, datetime]) -> list[float]:
    """Seconds from each incident's row to the worker's `incident_opened` line for it (the last
    one: an announcement that gave way to a busy row and ran again logs twice)."""
    delays: dict[int, float] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if '"incident_opened"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "incident_opened" and entry.get("incident") in opened_at:
            at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
            delays[entry["incident"]] = (at - opened_at[entry["incident"]]).total_seconds()
    return list(delays.values())


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE playbooks_incident, playbooks_clusterevent, channels_notificationstorm")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--workloads", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn --workers (the Procfile's: 2)")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn --threads (the Procfile's: 4)")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="the announcing worker's (the Procfile's: 2)")
    parser.add_argument("--no-worker", action="store_true", help="no worker: the announcements stay queued")
    args = parser.parse_args()

    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, check=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")
    import django

    django.setup()
    from channels.models import NotificationStorm
    from playbooks.models import ClusterEvent, Incident

    ClusterEvent.objects.all().delete()
    Incident.objects.all().delete()

    env = dict(os.environ, AIOPS_ALERTMANAGER_TOKEN=TOKEN, AIOPS_LOG_FORMAT="json")
    worker_log = ROOT / ".run" / "bench-alerts-worker.log"
    with gunicorn(env, args.workers, args.threads, ROOT / ".run" / "bench-alerts-gunicorn.log") as port, \
            celery_worker(env, args.worker_concurrency, worker_log, enabled=not args.no_worker):
        batches = make_batches(args.alerts, args.batch, args.workloads)
        send_all(port, batches[:4], 2)  # warm both workers' connections and imports, untimed
        ClusterEvent.objects.all().delete()
        Incident.objects.all().delete()
        NotificationStorm.objects.all().delete()
        vacuum()  # every run starts from the same tables, not from the dead rows of the runs before

        started = time.perf_counter()
        latencies, statuses, bodies = send_all(port, batches, args.senders)
        wall = time.perf_counter() - started
        stored_reported = sum(b["stored"] for b in bodies)
        # Alertmanager redelivers a batch it is unsure about: every alert is a duplicate now.
        re_started = time.perf_counter()
        re_latencies, re_statuses, re_bodies = send_all(port, batches, args.senders)
        re_wall = time.perf_counter() - re_started
        announce_wait = time.perf_counter()
        while not args.no_worker and Incident.objects.filter(announce_pending=True).exists():
            if time.perf_counter() - announce_wait > 300:
                break
            time.sleep(0.2)
        announce_wait = time.perf_counter() - announce_wait

    stored = ClusterEvent.objects.filter(kind="alert_fired").count()
    opened_at = dict(Incident.objects.values_list("pk", "opened_at"))
    delays = announce_delays(worker_log, opened_at) if not args.no_worker else []
    # Batches that open incidents write more rows (and used to run the incidents' receivers in
    # their transaction); split the run at the last batch that opened one.
    opening_done = max((b["done_at"] for b in bodies if b["opened"]), default=started)
    after = [b for b in bodies if b["done_at"] > opening_done]
    steady_s = max((b["done_at"] for b in after), default=opening_done) - opening_done
    summary = {
        "sent": args.alerts,
        "batch": args.batch,
        "senders": args.senders,
        "gunicorn": f"{args.workers}x{args.threads}",
        "wall_s": round(wall, 3),
        "alerts_per_s": round(args.alerts / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "non_200": sum(1 for s in statuses if s != 200),
        "opening_phase_s": round(opening_done - started, 3),
        "opening_p99_ms": round(percentile([b["latency"] for b in bodies if b["done_at"] <= opening_done], 0.99) * 1000, 1),
        "steady_p99_ms": round(percentile([b["latency"] for b in after], 0.99) * 1000, 1) if after else None,
        "steady_alerts_per_s": round(sum(b["stored"] for b in after) / steady_s, 1) if steady_s > 0 else None,
        "stored": stored,
        "stored_reported": stored_reported,
        "lost": args.alerts - stored,
        "incidents": Incident.objects.count(),
        "cluster_events": ClusterEvent.objects.count(),
        "redelivery_alerts_per_s": round(args.alerts / re_wall, 1),
        "redelivery_p99_ms": round(percentile(re_latencies, 0.99) * 1000, 1),
        "redelivery_stored": sum(b["stored"] for b in re_bodies),
        "redelivery_non_200": sum(1 for s in re_statuses if s != 200),
        "announced": len(delays),
        "unannounced": Incident.objects.filter(announce_pending=True).count(),
        "announce_p50_s": round(statistics.median(delays), 3) if delays else None,
        "announce_p99_s": round(percentile(delays, 0.99), 3) if delays else None,
        "announce_drain_s": round(announce_wait, 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
