"""One poll cycle against a big sandbox, against its floor and the naive way, in one run.

A sandbox (in its own process, TLS + token, like a real API server) is filled by its scale
generator with 10,000 pods, 1,000 nodes and 3,000 deployments. Then, each in a fresh process so
peak RSS is that process's own, `--repeat` times each (each process runs one untimed cycle
first, then the timed one: a poll runs in a long-lived worker):

  poll   the real thing: `playbooks.services.poll.poll(cluster)` -- six paginated raw list
         sequences, orjson, slimming, the detectors, the incident ingest into PostgreSQL;
  floor  the same list requests (same page size), parsed with orjson, and nothing else;
  naive  the kubernetes client's `list_*` calls deserialising every page into models.

Run (it needs the database for the poll's ingest):
  AIOPS_DB_USER=postgres .venv/bin/python -m aiops_site.embedded --run-dir .run/bench-watch -- .venv/bin/python bench/poll.py
Last line: one JSON object with poll_wall_s, peak_rss_mb, floor_s, naive_s and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SANDBOX = """
import json, sys
from k8s.sandbox import Sandbox
sb = Sandbox(tls=True, state_dir=sys.argv[1], scenario="empty").start()
made = sb.generate(int(sys.argv[2]), nodes=int(sys.argv[3]), deployments=int(sys.argv[4]))
print("BENCH-READY " + json.dumps({"kubeconfig": str(sb.kubeconfig), "made": made}), flush=True)
sys.stdin.read()  # serve until the bench closes our stdin
sb.stop()
"""


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_floor(kubeconfig: str) -> dict[str, object]:
    import orjson

    from k8s.client import api_client_for_kubeconfig
    from playbooks.services.poll import fetch_raw_pages, list_calls

    api = api_client_for_kubeconfig(kubeconfig)
    started = time.perf_counter()
    held: dict[str, list[object]] = {}
    for kind, call in list_calls(api).items():
        items: list[object] = []
        for body in fetch_raw_pages(call):
            items.extend(body.get("items") or [])
        held[kind] = items
    wall = time.perf_counter() - started
    assert orjson  # the parse above is orjson's (fetch_raw_pages)
    return {"wall_s": wall, "objects": {k: len(v) for k, v in held.items()}}


def run_naive(kubeconfig: str) -> dict[str, object]:
    from kubernetes import client as k8s_client

    from k8s.client import api_client_for_kubeconfig
    from playbooks.services.poll import PAGE_SIZE

    api = api_client_for_kubeconfig(kubeconfig)
    core, apps = k8s_client.CoreV1Api(api), k8s_client.AppsV1Api(api)
    calls = {
        "pods": core.list_pod_for_all_namespaces, "nodes": core.list_node,
        "deployments": apps.list_deployment_for_all_namespaces, "replicasets": apps.list_replica_set_for_all_namespaces,
        "hpas": k8s_client.AutoscalingV2Api(api).list_horizontal_pod_autoscaler_for_all_namespaces,
        "jobs": k8s_client.BatchV1Api(api).list_job_for_all_namespaces,
    }
    started = time.perf_counter()
    held: dict[str, list[object]] = {}
    for kind, call in calls.items():
        items: list[object] = []
        token = None
        while True:
            page = call(limit=PAGE_SIZE, **({"_continue": token} if token else {}))
            items.extend(page.items)
            token = page.metadata._continue
            if not token:
                break
        held[kind] = items
    return {"wall_s": time.perf_counter() - started, "objects": {k: len(v) for k, v in held.items()}}


def run_poll(kubeconfig: str) -> dict[str, object]:
    from k8s.models import Cluster
    from playbooks.services.poll import poll

    cluster, _ = Cluster.objects.update_or_create(name="bench", defaults={"kubeconfig_path": kubeconfig, "enabled": True})
    rss_before = peak_rss_mb()
    outcome = poll(cluster)
    assert outcome.outcome == "ok", outcome.error
    return {"wall_s": outcome.seconds, "findings": outcome.findings, "rss_before_poll_mb": rss_before}


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(mode: str, kubeconfig: str) -> None:
    # Every mode imports Django and the kubernetes client the same way, so their RSS figures
    # share one baseline.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")
    import django
    import kubernetes.client  # noqa: F401

    django.setup()
    run = {"poll": run_poll, "floor": run_floor, "naive": run_naive}[mode]
    # Steady state, as in a long-lived worker: the first cycle pays one-off costs (imports the
    # client does lazily, pydantic building its validators, TLS handshakes), so it is not timed.
    run(kubeconfig)
    cpu_before = cpu_s()
    result = run(kubeconfig)
    # This process's own CPU: the client-side work, without the API server's share of the wall time.
    result["cpu_s"] = cpu_s() - cpu_before
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def measure(mode: str, kubeconfig: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, __file__, "--worker", mode, "--kubeconfig", kubeconfig],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=1_000)
    parser.add_argument("--deployments", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-naive", action="store_true",
                        help="skip the client-models way (at 100k pods it would hold ~7 GB)")
    parser.add_argument("--worker", choices=["poll", "floor", "naive"])
    parser.add_argument("--kubeconfig")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.kubeconfig)

    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, check=True)
    state = tempfile.mkdtemp(prefix="bench-poll-")
    started = time.perf_counter()
    # The sandbox logs every request to stdout: into a file, never a pipe nobody drains.
    sandbox_log = open(Path(state) / "sandbox.log", "w+")  # noqa: SIM115 (closed below)
    sandbox = subprocess.Popen([sys.executable, "-c", SANDBOX, state, str(args.pods), str(args.nodes), str(args.deployments)],
                               stdin=subprocess.PIPE, stdout=sandbox_log, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        info = None
        while info is None:
            if sandbox.poll() is not None:
                raise SystemExit(f"the sandbox exited before it was ready:\n{Path(sandbox_log.name).read_text()[-3000:]}")
            for line in Path(sandbox_log.name).read_text().splitlines():
                if line.startswith("BENCH-READY "):
                    info = json.loads(line.removeprefix("BENCH-READY "))
            time.sleep(0.2)
        print(f"sandbox ready in {time.perf_counter() - started:.1f}s: {info['made']}", file=sys.stderr)
        kubeconfig = info["kubeconfig"]
        runs: dict[str, list[dict[str, object]]] = {"floor": [], "poll": [], "naive": []}
        measure("floor", kubeconfig)  # warm the sandbox's serialisation caches once, untimed
        for _ in range(args.repeat):
            for mode in ("floor", "poll") if args.no_naive else ("floor", "poll", "naive"):
                result = measure(mode, kubeconfig)
                runs[mode].append(result)
                print(mode, result, file=sys.stderr)
    finally:
        if sandbox.stdin:
            sandbox.stdin.close()
        sandbox.wait(30)
        sandbox_log.close()

    def median(mode: str, key: str) -> float:
        if not runs[mode]:
            return float("nan")
        return statistics.median(float(r[key]) for r in runs[mode])  # type: ignore[arg-type]

    poll_s, floor_s, naive_s = median("poll", "wall_s"), median("floor", "wall_s"), median("naive", "wall_s")
    poll_cpu, floor_cpu, naive_cpu = median("poll", "cpu_s"), median("floor", "cpu_s"), median("naive", "cpu_s")
    summary = {
        "pods": args.pods, "nodes": args.nodes, "deployments": args.deployments, "repeat": args.repeat,
        "objects": runs["floor"][0]["objects"],
        "poll_wall_s": round(poll_s, 3),
        "floor_s": round(floor_s, 3),
        "naive_s": round(naive_s, 3),
        "poll_vs_floor": round(poll_s / floor_s, 2),
        "naive_vs_poll": round(naive_s / poll_s, 2),
        "poll_cpu_s": round(poll_cpu, 3),
        "floor_cpu_s": round(floor_cpu, 3),
        "naive_cpu_s": round(naive_cpu, 3),
        "poll_cpu_vs_floor_cpu": round(poll_cpu / floor_cpu, 2),
        "naive_cpu_vs_poll_cpu": round(naive_cpu / poll_cpu, 2),
        "peak_rss_mb": round(max(float(r["peak_rss_mb"]) for r in runs["poll"]), 1),  # type: ignore[arg-type]
        "poll_rss_before_poll_mb": round(float(runs["poll"][0]["rss_before_poll_mb"]), 1),  # type: ignore[arg-type]
        "floor_peak_rss_mb": round(max(float(r["peak_rss_mb"]) for r in runs["floor"]), 1),  # type: ignore[arg-type]
        "naive_peak_rss_mb": round(max((float(r["peak_rss_mb"]) for r in runs["naive"]), default=float("nan")), 1),  # type: ignore[arg-type]
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "goals": {"poll_within_1.5x_floor": poll_s <= 1.5 * floor_s, "naive_at_least_4x_poll": naive_s >= 4 * poll_s,
                  "poll_rss_under_200mb": max(float(r["peak_rss_mb"]) for r in runs["poll"]) < 200,  # type: ignore[arg-type]
                  "poll_rss_under_300mb": max(float(r["peak_rss_mb"]) for r in runs["poll"]) < 300},  # type: ignore[arg-type]
    }
    if args.no_naive:
        summary.update({key: None for key in summary if key.startswith("naive") or "naive" in key})
        summary["goals"].pop("naive_at_least_4x_poll")  # type: ignore[attr-defined]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
