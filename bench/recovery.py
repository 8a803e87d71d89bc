"""Recovery after a worker dies mid-step, with the production defaults (issue 13, finding 4).

Two real Celery workers consume the bench's queue (a deployment runs more than one); each trial
starts a playbook run whose MEDIUM step (restart_pod) is approved, holds the sandbox's answer to
the DELETE (the cluster acted, the worker waits), and SIGKILLs the worker that holds the step --
its main process and its pool. This process stands in for beat: it runs `playbooks.reconcile_runs`'
function every AIOPS_RECONCILE_INTERVAL (10 s), as beat's schedule does. The other worker takes
the re-sent step; the worker killed is restarted between trials.

Reported (seconds from the SIGKILL):
  resent_p50_s / resent_p95_s / resent_max_s   until the step's row is queued again (re-sent)
  reclaimed_p95_s                              until a live worker has claimed it again
  lease_s, reconcile_interval_s                the settings measured (AIOPS_STEP_LEASE, ..._INTERVAL)
  doubled, unaudited                           actions done twice / changes with no `changed` entry (0, 0)

Run:
  .venv/bin/python -m aiops_site.embedded --run-dir .run/bench-recovery -- .venv/bin/python bench/recovery.py [--trials 10]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def start_worker(workdir: Path, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = workdir / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "aiops_site", "worker", "--loglevel", "INFO", "--concurrency", "2",
         "--hostname", f"{name}-{os.getpid()}@%h", "--without-heartbeat", "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while b"ready." not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(log.read_text()[-3000:])
        time.sleep(0.2)
    return process


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    import psutil

    for child in psutil.Process(process.pid).children(recursive=True):
        os.kill(child.pid, signal.SIGKILL)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")
    os.environ["AIOPS_LOG_LEVEL"] = "WARNING"
    queue = f"bench-recovery-{os.getpid()}"
    os.environ["AIOPS_CELERY_QUEUE"] = queue
    token = "bench-" + os.urandom(8).hex()
    os.environ["AIOPS_MCP_TOKEN"] = token
    workdir = Path(tempfile.mkdtemp(prefix="bench-recovery-"))

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from k8s.sandbox import Sandbox

    call_command("migrate", verbosity=0)
    sandbox = Sandbox(tls=True, state_dir=workdir, scenario="demo").start()
    port_file = workdir / "mcp.port"
    mcp = subprocess.Popen([sys.executable, "-m", "k8s.mcp_server", "--http", "--port", "0", "--port-file",
                            str(port_file), "--kubeconfig", sandbox.kubeconfig], cwd=ROOT,
                           stdout=open(workdir / "mcp.log", "wb"), stderr=subprocess.STDOUT)
    while not port_file.exists():
        if mcp.poll() is not None:
            raise SystemExit((workdir / "mcp.log").read_text())
        time.sleep(0.05)
    env = {**os.environ, "AIOPS_SECRET_KEY": settings.SECRET_KEY, "REDIS_URL": settings.REDIS_URL,
           "PYTHONUNBUFFERED": "1", "AIOPS_LOG_FORMAT": "json", "AIOPS_ACTIONS_PER_HOUR": "1000"}
    workers = {name: start_worker(workdir, name, env) for name in ("a", "b")}
    try:
        result = _trials(args, sandbox, f"http://127.0.0.1:{port_file.read_text().strip()}/mcp", workers, workdir,
                         env)
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.terminate()
                process.wait(30)
        mcp.terminate()
        mcp.wait(20)
        sandbox.stop()
    print(json.dumps(result))
    return 0


def _trials(args: Any, sandbox: Any, mcp_url: str, workers: dict[str, Any], workdir: Path,
            env: dict[str, str]) -> dict[str, Any]:
    import psutil
    from django.conf import settings
    from django.contrib.auth.models import Group, User

    from agents.models import AuditEntry
    from agents.registry import register_builtin
    from agents.services import decide_approval
    from k8s.models import Cluster
    from playbooks.engine import reconcile
    from playbooks.models import Incident, Playbook, PlaybookRun, Rule, Step, StepRun
    from playbooks.services.poll import poll

    register_builtin(mcp_url)
    group, _ = Group.objects.get_or_create(name=settings.AIOPS_APPROVER_GROUP)
    approver, _ = User.objects.get_or_create(username="bench-approver")
    approver.groups.add(group)
    Rule.objects.update(enabled=False)
    Rule.objects.filter(name="bench-recovery").delete()
    Playbook.objects.filter(name="bench_recovery").delete()
    playbook = Playbook.objects.create(name="bench_recovery")
    Step.objects.create(playbook=playbook, order=1, name="restart", kind="tool", tool="restart_pod",
                        args={"namespace": "{{ namespace }}", "name": "{{ pod }}"})
    Rule.objects.create(name="bench-recovery", playbook=playbook, finding_types=["crash_loop"], priority=1000,
                        cooldown_seconds=0)
    interval = settings.AIOPS_RECONCILE_INTERVAL
    stop = threading.Event()

    def beat() -> None:  # beat's schedule: playbooks.reconcile_runs every AIOPS_RECONCILE_INTERVAL
        from django.db import connection

        phase = random.uniform(0, interval)
        while not stop.wait(phase):
            phase = interval
            reconcile()
        connection.close()

    threading.Thread(target=beat, daemon=True).start()
    resent, reclaimed, doubled, unaudited = [], [], 0, 0
    api = sandbox.api
    try:
        for trial in range(args.trials):
            PlaybookRun.objects.all().delete()
            Incident.objects.all().delete()
            sandbox.reset("demo")
            Cluster.objects.filter(is_default=True).exclude(name="bench").update(is_default=False)
            cluster, _ = Cluster.objects.update_or_create(
                name="bench", defaults={"kubeconfig_path": sandbox.kubeconfig, "is_default": True, "enabled": True})
            before = {p["metadata"]["name"] for p in sandbox.sim.store.all("pods")
                      if p["metadata"]["name"].startswith("ledger-")}
            applied, release = threading.Event(), threading.Event()
            original = api.handle

            def handle(request: Any, original: Any = original, applied: Any = applied, release: Any = release) -> Any:
                response = original(request)
                if request.method == "DELETE" and "/pods/ledger-" in request.path and not applied.is_set():
                    applied.set()
                    release.wait(120)
                return response

            api.handle = handle
            poll(cluster)
            run = PlaybookRun.objects.get(incident__workload_name="ledger")
            step = StepRun.objects.get(run=run)
            deadline = time.monotonic() + 60
            while not StepRun.objects.filter(pk=step.pk, state="waiting_approval").exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"trial {trial}: no approval requested")
                time.sleep(0.05)
            decide_approval(StepRun.objects.get(pk=step.pk).approval_id, approver, "approve", "bench")
            if not applied.wait(60):
                raise SystemExit(f"trial {trial}: the DELETE never came")
            time.sleep(random.uniform(0, settings.AIOPS_STEP_LEASE))  # a random point of the call
            # The worker holding the call: the one whose pool has a connection to the MCP server now.
            victim = next(name for name, process in workers.items()
                          if any(c.raddr and c.raddr[1] == int(mcp_url.split(":")[2].split("/")[0])
                                 for child in psutil.Process(process.pid).children(recursive=True)
                                 for c in child.net_connections("tcp")))
            attempts = StepRun.objects.get(pk=step.pk).attempts
            killed_at = time.monotonic()
            kill_tree(workers[victim])
            release.set()
            del api.handle
            got_resent = got_reclaimed = None
            deadline = time.monotonic() + 180
            while got_reclaimed is None and time.monotonic() < deadline:
                row = StepRun.objects.get(pk=step.pk)
                if got_resent is None and (row.state == "queued" or row.attempts > attempts):
                    got_resent = time.monotonic() - killed_at
                if row.attempts > attempts:
                    got_reclaimed = time.monotonic() - killed_at
                time.sleep(0.05)
            if got_reclaimed is None or got_resent is None:
                raise SystemExit(f"trial {trial}: the step was not sent again within 180 s")
            resent.append(got_resent)
            reclaimed.append(got_reclaimed)
            while PlaybookRun.objects.get(pk=run.pk).state != "finished" and time.monotonic() < deadline:
                time.sleep(0.1)
            after = {p["metadata"]["name"] for p in sandbox.sim.store.all("pods")
                     if p["metadata"]["name"].startswith("ledger-")}
            changed = AuditEntry.objects.filter(action="tool_call", tool="restart_pod", effect="changed",
                                                idempotency_key=f"steprun:{step.pk}").count()
            doubled += int(len(before - after) > 1 or changed > 1)
            unaudited += int(len(before - after) == 1 and changed == 0)
            print(f"trial {trial}: killed {victim}; re-sent after {got_resent:.1f}s, reclaimed after "
                  f"{got_reclaimed:.1f}s; pods deleted {len(before - after)}; changed entries {changed}",
                  file=sys.stderr, flush=True)
            workers[victim] = start_worker(workdir, victim, env)
    finally:
        stop.set()
    return {
        "trials": len(resent), "resent_p50_s": round(percentile(resent, 50), 1),
        "resent_p95_s": round(percentile(resent, 95), 1), "resent_max_s": round(max(resent), 1),
        "reclaimed_p95_s": round(percentile(reclaimed, 95), 1), "lease_s": settings.AIOPS_STEP_LEASE,
        "reconcile_interval_s": interval, "doubled": doubled, "unaudited": unaudited,
    }


if __name__ == "__main__":
    sys.exit(main())
