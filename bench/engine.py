"""The engine under load: N incidents through rules to finished runs, on the sandbox, with a
real Celery worker and our real MCP server; an approver approves every request at once.

Each run is (every step with a `when:` condition, evaluated when it runs):
describe_pod (LOW, at once) -> restart_pod (MEDIUM: approval requested, the run
waits without a worker, the approver decides, `approval_decided` resumes it) -> verify (the
detectors on fresh lists). The sandbox (its own process, TLS + token) holds N single-replica
deployments with a transient crash loop each; one poll opens the N incidents.

Reported:
  runs_per_min                 N / (first run created -> last run finished)
  decision_to_action_p50/95_ms approval decided_at -> the restart_pod call finished (its audit row)
  conditions_evaluated         steps whose `when:` was evaluated (every step of every run)
  condition_eval_p50/95_ms     one step's condition: its context built and evaluated (in this process)
Baselines measured in the same run, on the same worker and MCP server:
  task_roundtrip_p50_ms        a no-op Celery task, enqueue -> result
  tool_call_p50_ms             describe_pod through call_tool in this process (no Celery)
so decision -> action can be read as (one task hop + one tool call) + the engine's own overhead.

Run:
  AIOPS_DB_USER=postgres .venv/bin/python -m aiops_site.embedded --run-dir .run/bench-engine -- .venv/bin/python bench/engine.py [--runs 100]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SANDBOX = """
import json, sys
from k8s.sandbox import Sandbox
sb = Sandbox(tls=True, state_dir=sys.argv[1], scenario="empty").start()
n = int(sys.argv[2])
sb.generate(n, nodes=max(3, n // 50), deployments=n)
api = sb.api_client()
from kubernetes import client
deps = client.AppsV1Api(api).list_deployment_for_all_namespaces().items
targets = [f"{d.metadata.namespace}/{d.metadata.name}" for d in deps][:n]
for target in targets:
    sb.fault("crash_loop", target, transient=True)
print("BENCH-READY " + json.dumps({"kubeconfig": str(sb.kubeconfig), "targets": targets}), flush=True)
sys.stdin.read()
sb.stop()
"""


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes (tool calls wait on I/O)")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiops_site.settings")
    os.environ["AIOPS_LOG_LEVEL"] = "WARNING"
    workdir = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    queue = f"bench-engine-{os.getpid()}"
    os.environ["AIOPS_CELERY_QUEUE"] = queue
    token = "bench-" + os.urandom(8).hex()
    os.environ["AIOPS_MCP_TOKEN"] = token

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    # --- the sandbox, our MCP server, a worker ---------------------------------------------
    # Its output goes to a file: a pipe nobody reads fills up and blocks every sandbox thread.
    sandbox_log = open(workdir / "sandbox.log", "wb")
    sandbox = subprocess.Popen([sys.executable, "-c", SANDBOX, str(workdir), str(args.runs)], cwd=ROOT,
                               stdin=subprocess.PIPE, stdout=sandbox_log, stderr=subprocess.STDOUT)
    ready = None
    while ready is None:
        for line in (workdir / "sandbox.log").read_text(errors="replace").splitlines():
            if line.startswith("BENCH-READY "):
                ready = json.loads(line.split(" ", 1)[1])
        if ready is None:
            if sandbox.poll() is not None:
                raise SystemExit("sandbox did not start:\n" + (workdir / "sandbox.log").read_text()[-3000:])
            time.sleep(0.1)
    kubeconfig = ready["kubeconfig"]
    port_file = workdir / "mcp.port"
    mcp_log = open(workdir / "mcp.log", "wb")
    mcp = subprocess.Popen([sys.executable, "-m", "k8s.mcp_server", "--http", "--port", "0", "--port-file",
                            str(port_file), "--kubeconfig", kubeconfig], cwd=ROOT,
                           env={**os.environ, "AIOPS_LOG_LEVEL": "WARNING"}, stdout=mcp_log, stderr=subprocess.STDOUT)
    while not port_file.exists():
        if mcp.poll() is not None:
            raise SystemExit((workdir / "mcp.log").read_text())
        time.sleep(0.05)
    mcp_url = f"http://127.0.0.1:{port_file.read_text().strip()}/mcp"
    worker_log = open(workdir / "worker.log", "wb")
    env = {**os.environ, "AIOPS_CELERY_QUEUE": queue, "AIOPS_MCP_TOKEN": token, "AIOPS_LOG_LEVEL": "WARNING",
           "AIOPS_ACTIONS_PER_HOUR": str(10 * args.runs), "AIOPS_SECRET_KEY": settings.SECRET_KEY,
           "REDIS_URL": settings.REDIS_URL, "PYTHONUNBUFFERED": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "aiops_site", "worker", "--loglevel", "WARNING", "--concurrency",
         str(args.concurrency), "--hostname", f"bench-{os.getpid()}@%h", "--without-heartbeat", "--without-mingle",
         "--without-gossip", "--include", "tests.support_tasks"],
        cwd=ROOT, env=env, stdout=worker_log, stderr=subprocess.STDOUT,
    )
    try:
        return _measure(args, kubeconfig, mcp_url, settings, Group, User, worker, workdir)
    finally:
        for process in (worker, mcp):
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        sandbox.stdin.close()  # type: ignore[union-attr]
        sandbox.wait(20)


def _measure(args, kubeconfig, mcp_url, settings, Group, User, worker, workdir) -> int:  # type: ignore[no-untyped-def]  # noqa: N803
    from agents.models import Approval, AuditEntry
    from agents.registry import register_builtin
    from agents.services import ApprovalError, call_tool, decide_approval
    from k8s.models import Cluster
    from playbooks.models import Incident, Playbook, PlaybookRun, Rule, Step, StepRun
    from playbooks.services.poll import poll
    from tests.support_tasks import log_and_chain

    # A clean slate in this bench database.
    PlaybookRun.objects.all().delete()
    Incident.objects.all().delete()
    Rule.objects.update(enabled=False)
    Rule.objects.filter(name="bench").delete()
    Playbook.objects.filter(name="bench_restart").delete()
    Cluster.objects.filter(is_default=True).update(is_default=False)
    cluster, _ = Cluster.objects.update_or_create(
        name="bench", defaults={"kubeconfig_path": kubeconfig, "is_default": True, "enabled": True})
    register_builtin(mcp_url)
    group, _ = Group.objects.get_or_create(name=settings.AIOPS_APPROVER_GROUP)
    approver, _ = User.objects.get_or_create(username="bench-approver")
    approver.groups.add(group)
    playbook = Playbook.objects.create(name="bench_restart")
    Step.objects.bulk_create([
        # A `when:` condition on every step, evaluated (CEL) each time the step runs.
        Step(playbook=playbook, order=1, name="describe", kind="tool", tool="describe_pod",
             args={"namespace": "{{ namespace }}", "name": "{{ pod }}"}, on_failure="continue",
             when='pod_count >= 1 && incident.primary_type == "crash_loop"'),
        Step(playbook=playbook, order=2, name="restart", kind="tool", tool="restart_pod",
             args={"namespace": "{{ namespace }}", "name": "{{ pod }}"},
             when='rca.failure_class in ["app_crash", "unknown", ""] && !(pod_count > 1) && steps.describe.ok'),
        Step(playbook=playbook, order=3, name="verify", kind="verify", args={"checks": 5, "interval": 1},
             when="steps.restart.ok"),
    ])
    Rule.objects.create(name="bench", playbook=playbook, finding_types=["crash_loop"], priority=1000,
                        cooldown_seconds=0)

    # Wait for the worker, then the baselines.
    deadline = time.monotonic() + 60
    while b"ready" not in (workdir / "worker.log").read_bytes() and time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit((workdir / "worker.log").read_text()[-3000:])
        time.sleep(0.2)
    roundtrips = []
    for _ in range(30):
        started = time.perf_counter()
        log_and_chain.delay(0).get(timeout=30)
        roundtrips.append((time.perf_counter() - started) * 1000)
    tool_calls = []
    namespace, name = _first_pod(kubeconfig)
    for _ in range(20):
        started = time.perf_counter()
        call_tool("describe_pod", {"namespace": namespace, "name": name}, actor="bench", reason="baseline")
        tool_calls.append((time.perf_counter() - started) * 1000)

    # The approver: decides each request as soon as it sees it (a person clicking at once).
    stop = threading.Event()

    def approve_loop() -> None:
        from django.db import connection

        while not stop.is_set():
            for approval_id in Approval.objects.filter(state="pending", origin="playbook").values_list("pk", flat=True):
                try:
                    decide_approval(approval_id, approver, "approve", "bench")
                except ApprovalError as exc:
                    print(f"approval {approval_id}: {exc}", file=sys.stderr)
            time.sleep(0.05)
        connection.close()

    approver_thread = threading.Thread(target=approve_loop, daemon=True)
    approver_thread.start()

    from django.utils import timezone

    bench_started = timezone.now()  # the audit log is append-only: earlier runs' rows stay
    poll_started = time.monotonic()
    outcome = poll(cluster)
    poll_s = time.monotonic() - poll_started
    runs = PlaybookRun.objects.filter(playbook_name="bench_restart")
    created = runs.count()
    deadline = time.monotonic() + args.timeout
    while runs.exclude(state="finished").exists() and time.monotonic() < deadline:
        time.sleep(0.25)
    stop.set()
    approver_thread.join(10)

    finished = list(runs.filter(state="finished").values("outcome", "created_at", "finished_at"))
    first, last = min(r["created_at"] for r in runs.values("created_at")), max(r["finished_at"] for r in finished)
    wall = (last - first).total_seconds()
    outcomes: dict[str, int] = {}
    for run in finished:
        outcomes[run["outcome"]] = outcomes.get(run["outcome"], 0) + 1
    # The first call that carried out each approval (a retried step may call again: a no-op).
    first_done: dict[int, Any] = {}
    for entry in AuditEntry.objects.filter(action="tool_call", tool="restart_pod", approval__isnull=False, outcome="ok",
                                           created_at__gte=bench_started).select_related("approval").order_by("created_at"):
        first_done.setdefault(entry.approval_id, entry)
    latencies = [(e.created_at - e.approval.decided_at).total_seconds() * 1000 for e in first_done.values()]
    calls = AuditEntry.objects.filter(action="tool_call", tool="restart_pod", created_at__gte=bench_started).count()
    # What a `when:` costs per step: building its context (incident, earlier steps) and evaluating
    # it, timed on a finished run's restart step, as execute_step does before every handler.
    from playbooks.steps import condition_result

    sample = StepRun.objects.select_related("run__incident", "run__cluster").filter(
        run__in=runs, name="restart").first()
    condition_ms: list[float] = []
    if sample is not None:
        sample.approval_id = None  # evaluate as before the approval was asked
        for _ in range(200):
            started = time.perf_counter()
            condition_result(sample, sample.run)
            condition_ms.append((time.perf_counter() - started) * 1000)
    result = {
        "runs": created,
        "finished": len(finished),
        "outcomes": outcomes,
        "findings_by_poll": outcome.findings,
        "poll_s": round(poll_s, 2),
        "wall_s": round(wall, 2),
        "runs_per_min": round(len(finished) / wall * 60, 1) if wall > 0 else None,
        "decision_to_action_p50_ms": round(percentile(latencies, 50), 1),
        "decision_to_action_p95_ms": round(percentile(latencies, 95), 1),
        "actions": len(latencies),
        "restart_calls": calls,
        # Steps whose `when:` was evaluated and held (ran) or not (skipped, recorded as such).
        "conditions_evaluated": StepRun.objects.filter(run__in=runs).exclude(when="").exclude(
            state__in=["pending", "cancelled"]).count(),
        "condition_eval_p50_ms": round(percentile(condition_ms, 50), 2) if condition_ms else None,
        "condition_eval_p95_ms": round(percentile(condition_ms, 95), 2) if condition_ms else None,
        "steps_skipped_by_condition": StepRun.objects.filter(run__in=runs, state="skipped",
                                                             data__has_key="condition").count(),
        "task_roundtrip_p50_ms": round(statistics.median(roundtrips), 1),
        "tool_call_p50_ms": round(statistics.median(tool_calls), 1),
        "decision_to_action_p50_over_baseline": round(
            percentile(latencies, 50) / (statistics.median(roundtrips) + statistics.median(tool_calls)), 2),
        "worker_concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0 if len(finished) == created else 1


def _first_pod(kubeconfig: str) -> tuple[str, str]:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    pod = client.CoreV1Api(api).list_pod_for_all_namespaces(limit=1).items[0]
    return pod.metadata.namespace, pod.metadata.name


if __name__ == "__main__":
    raise SystemExit(main())
