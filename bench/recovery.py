"""Recovery of a step whose worker died, with the production settings (issue 13, finding 4).

What `make run` runs, on the embedded PostgreSQL and Redis: one real Celery worker (concurrency 2)
and a real `celery beat` with the project's schedule, both with the production defaults of
AIOPS_STEP_LEASE, AIOPS_RECONCILE_INTERVAL, AIOPS_MCP_TIMEOUT and AIOPS_ORPHAN_GRACE (this
script refuses to run if the environment sets them); our MCP server; the sandbox in a process of
its own, which carries out each pod DELETE and then holds its answer for --hold seconds (the
cluster acted, the worker waits: the window finding 3 is about).

Each trial faults one deployment of its own with a crash loop, polls once (an incident, a run of
a one-step playbook: restart_pod, MEDIUM), approves the step, waits until the sandbox holds the
DELETE, sleeps a random part of the hold, then SIGKILLs the worker with its pool and starts a new
one at once, as supervisord does. Then it waits for the step to finish.

Reported (seconds from the SIGKILL):
  resent_p50_s / resent_p95_s      the reconciler put the step back on the queue (lease lapsed)
  recovery_p50_s / recovery_p95_s / recovery_max_s
                                   the step finished (succeeded) on the new worker
  worker_back_p50_s                the new worker said "ready"
  lost                             steps not finished within --trial-timeout (0)
  doubled                          trials in which the pod was deleted twice or two audit entries
                                   say the cluster changed (0)
  unaudited                        trials whose deletion no audit entry records as a change (0)
  lease_s, reconcile_interval_s, load_avg_1m, cpus

Run (the bench database is the embedded one under .run/bench-recovery):
  AIOPS_DB_USER=postgres .venv/bin/python -m aiops_site.embedded --run-dir .run/bench-recovery -- .venv/bin/python bench/recovery.py [--runs 20]
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
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRODUCTION = ("AIOPS_STEP_LEASE", "AIOPS_RECONCILE_INTERVAL", "AIOPS_MCP_TIMEOUT", "AIOPS_ORPHAN_GRACE",
              "AIOPS_STEP_REQUEUE_AFTER")

# The sandbox, in a process of its own: one single-pod deployment per trial; the first DELETE of
# each pod is carried out, then its answer held. Commands on stdin: "fault NAMESPACE/NAME".
SANDBOX = """
import json, sys, threading, time
from k8s.sandbox import Sandbox
sb = Sandbox(tls=True, state_dir=sys.argv[1], scenario="empty").start()
n, hold = int(sys.argv[2]), float(sys.argv[3])
sb.generate(n, nodes=3, deployments=n)
from kubernetes import client
deps = client.AppsV1Api(sb.api_client()).list_deployment_for_all_namespaces().items
targets = [f"{d.metadata.namespace}/{d.metadata.name}" for d in deps][:n]
api, held, lock = sb.api, set(), threading.Lock()
original = api.handle
def handle(request):
    response = original(request)
    if request.method == "DELETE" and "/pods/" in request.path:
        with lock:
            first = request.path not in held
            held.add(request.path)
        if first:
            print("HELD " + request.path, flush=True)
            time.sleep(hold)
    return response
api.handle = handle
print("BENCH-READY " + json.dumps({"kubeconfig": str(sb.kubeconfig), "targets": targets}), flush=True)
for line in sys.stdin:
    command, target = line.split()
    if command == "fault":
        sb.fault("crash_loop", target, transient=True)
        print("FAULTED " + target, flush=True)
sb.stop()
"""


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def wait_for_line(path: Path, prefix: str, process: subprocess.Popen[bytes], timeout: float, seen: int = 0) -> str:
    """The first line of `path` after line `seen` that starts with `prefix`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text(errors="replace").splitlines()[seen:]
        for line in lines:
            if line.startswith(prefix):
                return line
        if process.poll() is not None:
            raise SystemExit(f"{path.name}: the process exited:\n" + path.read_text(errors="replace")[-3000:])
        time.sleep(0.05)
    raise SystemExit(f"{path.name}: no '{prefix}' within {timeout:.0f}s:\n" + path.read_text(errors="replace")[-3000:])


class Supervised:
    """A celery process restarted at once when killed, as supervisord restarts `make run`'s."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path, ready: str | None) -> None:
        self.name, self.argv, self.env, self.workdir, self.ready = name, argv, env, workdir, ready
        self.generation = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}-{self.generation}.log"

    def start(self) -> None:
        self.generation += 1
        self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=open(self.log, "wb"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> float:
        started = time.monotonic()
        if self.ready:
            assert self.process is not None
            deadline = started + timeout
            while self.ready.encode() not in self.log.read_bytes():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{self.name} did not start:\n" + self.log.read_text(errors="replace")[-3000:])
                time.sleep(0.05)
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the process and its children at once (a machine dying)."""
        import psutil

        assert self.process is not None
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                os.kill(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--hold", type=float, default=3.0, help="seconds the sandbox holds a DELETE's answer")
    parser.add_argument("--trial-timeout", type=float, default=240, help="after the kill; a step not finished by then is lost")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    overridden = [name for name in PRODUCTION if name in os.environ]
    if overridden:
        raise SystemExit(f"this bench measures the production defaults; unset {', '.join(overridden)}")

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")
    os.environ["AIOPS_LOG_LEVEL"] = "WARNING"
    workdir = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    queue = f"bench-recovery-{os.getpid()}"
    os.environ["AIOPS_CELERY_QUEUE"] = queue
    token = "bench-" + os.urandom(8).hex()
    os.environ["AIOPS_MCP_TOKEN"] = token

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    sandbox_log = workdir / "sandbox.log"
    sandbox = subprocess.Popen([sys.executable, "-c", SANDBOX, str(workdir), str(args.runs), str(args.hold)],
                               cwd=ROOT, stdin=subprocess.PIPE, stdout=open(sandbox_log, "wb"),
                               stderr=subprocess.STDOUT)
    ready = json.loads(wait_for_line(sandbox_log, "BENCH-READY ", sandbox, 180).split(" ", 1)[1])
    port_file = workdir / "mcp.port"
    mcp = subprocess.Popen([sys.executable, "-m", "k8s.mcp_server", "--http", "--port", "0", "--port-file",
                            str(port_file), "--kubeconfig", ready["kubeconfig"]], cwd=ROOT,
                           stdout=open(workdir / "mcp.log", "wb"), stderr=subprocess.STDOUT)
    while not port_file.exists():
        if mcp.poll() is not None:
            raise SystemExit((workdir / "mcp.log").read_text())
        time.sleep(0.05)
    mcp_url = f"http://127.0.0.1:{port_file.read_text().strip()}/mcp"
    # Where the built-in server is (as `make run`'s start-up hook says): beat's sync_mcp_servers
    # registers it again from this every ten minutes.
    os.environ["AIOPS_MCP_URL"] = mcp_url
    env = {**os.environ, "AIOPS_SECRET_KEY": settings.SECRET_KEY, "REDIS_URL": settings.REDIS_URL,
           "PYTHONUNBUFFERED": "1", "AIOPS_LOG_LEVEL": "INFO",
           # Not recovery settings: room for the bench's actions, and beat's poll of the cluster
           # kept out of the way (each trial polls once itself).
           "AIOPS_ACTIONS_PER_HOUR": "1000", "AIOPS_POLL_INTERVAL": "3600"}
    worker = Supervised("worker", [
        sys.executable, "-m", "celery", "-A", "aiops_site", "worker", "-E", "--loglevel", "INFO", "--concurrency", "2",
        "--hostname", f"bench-recovery-{os.getpid()}@%h"], env, workdir,  # the Procfile's worker
        ready="ready.")
    beat = Supervised("beat", [
        sys.executable, "-m", "celery", "-A", "aiops_site", "beat", "--loglevel", "INFO",
        "--scheduler", "celery.beat:PersistentScheduler", "--schedule", str(workdir / "beat-schedule"),
        "--pidfile="], env, workdir, ready=None)
    worker.start()
    worker.wait_ready()
    beat.start()
    try:
        result = _trials(args, ready, mcp_url, worker, sandbox, sandbox_log)
    finally:
        beat.stop()
        worker.stop()
        mcp.terminate()
        mcp.wait(20)
        sandbox.stdin.close()  # type: ignore[union-attr]
        sandbox.wait(30)
    print(json.dumps(result))
    return 0 if result["lost"] == 0 and result["doubled"] == 0 and result["unaudited"] == 0 else 1


def _trials(args: Any, ready: dict[str, Any], mcp_url: str, worker: Supervised, sandbox: subprocess.Popen[bytes],
            sandbox_log: Path) -> dict[str, Any]:
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from kubernetes import client, config

    from agents.models import AuditEntry
    from agents.registry import register_builtin
    from agents.services import decide_approval
    from k8s.models import Cluster
    from playbooks.models import Incident, Playbook, PlaybookRun, Rule, Step, StepRun
    from playbooks.services.poll import poll

    PlaybookRun.objects.all().delete()
    Incident.objects.all().delete()
    Cluster.objects.filter(is_default=True).update(is_default=False)
    cluster, _ = Cluster.objects.update_or_create(
        name="bench-recovery", defaults={"kubeconfig_path": ready["kubeconfig"], "context": "", "in_cluster": False,
                                         "is_default": True, "enabled": True})
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
    core = client.CoreV1Api(config.new_client_from_config(config_file=ready["kubeconfig"]))
    rng = random.Random(args.seed)

    def pods(namespace: str, name: str) -> set[str]:
        return {p.metadata.name for p in core.list_namespaced_pod(namespace).items
                if p.metadata.name.startswith(name + "-")}

    resent: list[float] = []
    recovered: list[float] = []
    worker_back: list[float] = []
    lost = doubled = unaudited = 0
    for trial, target in enumerate(ready["targets"][:args.runs]):
        namespace, name = target.split("/")
        before = pods(namespace, name)
        seen = len(sandbox_log.read_text(errors="replace").splitlines())
        sandbox.stdin.write(f"fault {target}\n".encode())  # type: ignore[union-attr]
        sandbox.stdin.flush()  # type: ignore[union-attr]
        wait_for_line(sandbox_log, f"FAULTED {target}", sandbox, 30, seen)
        poll(cluster)
        run = PlaybookRun.objects.get(incident__namespace=namespace, incident__workload_name=name,
                                      playbook_name="bench_recovery")
        step = StepRun.objects.get(run=run)
        deadline = time.monotonic() + 120
        while not StepRun.objects.filter(pk=step.pk, state="waiting_approval").exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"trial {trial}: no approval requested: {StepRun.objects.get(pk=step.pk).state}")
            time.sleep(0.05)
        decide_approval(StepRun.objects.get(pk=step.pk).approval_id, approver, "approve", "bench")
        wait_for_line(sandbox_log, f"HELD /api/v1/namespaces/{namespace}/pods/{name}-", sandbox, 120, seen)
        time.sleep(rng.uniform(0, args.hold * 0.9))  # a random point of the call
        attempts = StepRun.objects.get(pk=step.pk).attempts
        killed_at = time.monotonic()
        worker.kill()
        worker.start()  # supervisord's restart
        back_after = None
        got_resent = got_finished = None
        deadline = killed_at + args.trial_timeout
        while time.monotonic() < deadline:
            now = time.monotonic() - killed_at
            if back_after is None and b"ready." in worker.log.read_bytes():
                back_after = now
            row = StepRun.objects.get(pk=step.pk)
            if got_resent is None and (row.state == "queued" or row.attempts > attempts):
                got_resent = now
            if row.state in StepRun.DONE_STATES:
                got_finished = now
                break
            time.sleep(0.1)
        if back_after is None:
            back_after = worker.wait_ready() + (time.monotonic() - killed_at)
        worker_back.append(back_after)
        row = StepRun.objects.get(pk=step.pk)
        if got_finished is None or row.state != "succeeded":
            lost += 1
            print(f"trial {trial}: LOST step {step.pk} state={row.state} attempts={row.attempts} "
                  f"error={row.error[:200]!r}", file=sys.stderr, flush=True)
            continue
        assert got_resent is not None
        resent.append(got_resent)
        recovered.append(got_finished)
        deleted = before - pods(namespace, name)
        changed = AuditEntry.objects.filter(action="tool_call", tool="restart_pod", effect="changed",
                                            idempotency_key=f"steprun:{step.pk}").count()
        doubled += int(len(deleted) > 1 or changed > 1)
        unaudited += int(len(deleted) == 1 and changed == 0)
        print(f"trial {trial}: worker back {back_after:.1f}s, step re-sent {got_resent:.1f}s, finished "
              f"{got_finished:.1f}s after the kill (attempts {row.attempts}); pods deleted {len(deleted)}, "
              f"'changed' entries {changed}; load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    return {
        "runs": len(recovered) + lost,
        "resent_p50_s": round(percentile(resent, 50), 1),
        "resent_p95_s": round(percentile(resent, 95), 1),
        "recovery_p50_s": round(percentile(recovered, 50), 1),
        "recovery_p95_s": round(percentile(recovered, 95), 1),
        "recovery_max_s": round(max(recovered), 1) if recovered else None,
        "worker_back_p50_s": round(percentile(worker_back, 50), 1),
        "lost": lost, "doubled": doubled, "unaudited": unaudited,
        "lease_s": settings.AIOPS_STEP_LEASE, "reconcile_interval_s": settings.AIOPS_RECONCILE_INTERVAL,
        "hold_s": args.hold, "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    raise SystemExit(main())
