"""The REST API's incident list with 10,000 incidents: the first page, as a script polls it.

gunicorn runs as the Procfile runs it (2 workers x 4 threads) on a free loopback port. The
database holds `--incidents` incidents (a quarter open, over 5 clusters, 40 namespaces, 3
severities, the finding types). One client with a personal token (`read` scope) asks for the
first page (50, newest first) `--requests` times over a keep-alive connection, then the first
page of open critical incidents (`?state=open&severity=critical`), after an untimed warm-up.
Each request is authenticated, throttled (Redis) and paginated as any client's.

Run:
  AIOPS_DB_USER=postgres .venv/bin/python -m aiops_site.embedded --run-dir .run/bench-api -- .venv/bin/python bench/api.py
Last line: one JSON object with incidents, requests, first_page_p50_ms, first_page_p95_ms,
filtered_p50_ms, filtered_p95_ms, health_p50_ms, health_p95_ms (the same server's /health: the
machine's floor at that moment), goal_p95_ms and met.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.serve import gunicorn  # noqa: E402

GOAL_P95_MS = 50.0
TYPES = ["crash_loop", "oom_killed", "image_pull_failure", "unschedulable", "probe_failure", "hpa_maxed", "evicted"]



def seed(count: int) -> str:
    """`count` incidents and a token; returns the token's clear text."""
    from django.contrib.auth.models import User
    from django.utils import timezone

    from api.models import ApiToken
    from k8s.models import Cluster
    from playbooks.models import Incident

    Incident.objects.all().delete()
    clusters = [Cluster.objects.update_or_create(name=f"bench-{n}", defaults={"kubeconfig_path": "/dev/null"})[0]
                for n in range(5)]
    now = timezone.now()
    rows = []
    for i in range(count):
        kind = TYPES[i % len(TYPES)]
        opened = now - timedelta(minutes=count - i)
        open_ = i % 4 == 0
        rows.append(Incident(
            cluster=clusters[i % 5], workload_kind="Deployment", namespace=f"team-{i % 40:02d}",
            workload_name=f"svc-{i:05d}", primary_type=kind, finding_types=[kind],
            severity=("critical", "warning", "info")[i % 3], title=f"svc-{i:05d} {kind}",
            affected_pods=[f"svc-{i:05d}-abc12-xyz{i % 10}"], evidence={kind: {"container": "app"}},
            state="open" if open_ else "resolved", resolved_at=None if open_ else opened + timedelta(minutes=5),
            opened_at=opened, last_seen_at=opened,
        ))
    Incident.objects.bulk_create(rows, batch_size=2000)
    user, _ = User.objects.get_or_create(username="bench-api")
    ApiToken.objects.filter(user=user).delete()
    return ApiToken.issue(user, "bench", ["read"], 1)[1]


def timed(conn: http.client.HTTPConnection, path: str, token: str) -> float:
    started = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    response = conn.getresponse()
    body = response.read()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise SystemExit(f"GET {path}: {response.status} {body[:300]!r}")
    return elapsed


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn --workers (the Procfile's: 2)")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn --threads (the Procfile's: 4)")
    args = parser.parse_args()

    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, check=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")
    import django

    django.setup()
    seeded = time.perf_counter()
    token = seed(args.incidents)
    seed_s = time.perf_counter() - seeded

    env = dict(os.environ, AIOPS_LOG_FORMAT="json", AIOPS_LOG_LEVEL="WARNING", AIOPS_API_RATE="100000/minute")
    with gunicorn(env, args.workers, args.threads, ROOT / ".run" / "bench-api-gunicorn.log") as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        first, filtered = "/api/v1/incidents/", "/api/v1/incidents/?state=open&severity=critical"
        for _ in range(20):  # warm both workers (imports, connections, plans), untimed
            timed(conn, first, token)
            timed(conn, filtered, token)
        conn.request("GET", first, headers={"Authorization": f"Bearer {token}"})
        page = json.loads(conn.getresponse().read())
        assert len(page["results"]) == 50 and page["next"], "the first page is not a full page with a next"
        plain = [timed(conn, first, token) for _ in range(args.requests)]
        narrow = [timed(conn, filtered, token) for _ in range(args.requests)]
        # The floor on this machine now: the same server's /health (no database, no auth).
        floor = [timed(conn, "/health", token) for _ in range(args.requests)]
    first_p95 = p95(plain)
    print(f"seeded {args.incidents} incidents in {seed_s:.1f} s; load average {os.getloadavg()[0]:.2f}")
    print(json.dumps({
        "incidents": args.incidents, "requests": args.requests, "page_size": 50,
        "gunicorn": f"{args.workers}x{args.threads}",
        "first_page_p50_ms": round(statistics.median(plain), 1), "first_page_p95_ms": round(first_p95, 1),
        "filtered_p50_ms": round(statistics.median(narrow), 1), "filtered_p95_ms": round(p95(narrow), 1),
        "health_p50_ms": round(statistics.median(floor), 1), "health_p95_ms": round(p95(floor), 1),
        "goal_p95_ms": GOAL_P95_MS, "met": first_p95 < GOAL_P95_MS, "load_average": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
