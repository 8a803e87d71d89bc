"""Finding 8 of issue 13: the chaos suite. A worker killed with SIGKILL at a random point of each
step kind (tool LOW / MEDIUM / HIGH, rca, notify, verify): 0 steps lost, 0 actions doubled, every
action audited exactly once. Then Redis flushed mid-run, Redis restarted mid-run, and the MCP
server killed mid-call. Figures and commands: docs/reliability.md.

Each trial is one run of a playbook with every step kind against the sandbox, on a real worker
(`chaos_worker`, lease 4 s) that is killed with its pool once, restarted, and driven to the end;
the test process stands in for beat (it calls the reconcilers) and for the approver.
`AIOPS_CHAOS_REPEAT` (default 1) repeats each kind; the issue's 20 x 6 is
`AIOPS_CHAOS_REPEAT=20 make test PYTEST_ARGS="-m chaos"`.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import pytest

from agents.models import Approval, AuditEntry
from agents.services import decide_approval
from playbooks.engine import reconcile
from playbooks.models import PlaybookRun, StepRun
from playbooks.services.poll import poll
from tests.chaos.test_write_ahead import only_playbook, pods
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

REPEAT = int(os.environ.get("AIOPS_CHAOS_REPEAT", "1"))

STEPS = [
    {"name": "describe pod", "kind": "tool", "tool": "describe_pod",
     "args": {"namespace": "{{ namespace }}", "name": "{{ pod }}"}},
    {"name": "rca", "kind": "rca", "args": {}},
    {"name": "tell", "kind": "notify", "args": {"text": "chaos trial on {{ namespace }}/{{ name }}"}},
    {"name": "scale up", "kind": "tool", "tool": "scale_deployment",
     "args": {"namespace": "{{ namespace }}", "name": "{{ name }}", "replicas": 3}},
    {"name": "restart pod", "kind": "tool", "tool": "restart_pod",
     "args": {"namespace": "{{ namespace }}", "name": "{{ pod }}"}},
    {"name": "raise memory", "kind": "tool", "tool": "patch_memory_limit",
     "args": {"namespace": "{{ namespace }}", "name": "{{ name }}", "memory": "384Mi"}},
    {"name": "verify", "kind": "verify", "args": {"checks": 3, "interval": 1}},
]
# The step a trial kills the worker in, by kind.
KINDS = {"tool_low": "describe pod", "rca": "rca", "notify": "tell", "tool_medium": "scale up",
         "tool_high": "raise memory", "verify": "verify"}
MUTATING = ("scale_deployment", "restart_pod", "patch_memory_limit")


def _deployment(sandbox: Any) -> dict[str, Any]:
    from kubernetes import client

    return client.AppsV1Api(sandbox.api_client()).read_namespaced_deployment("ledger", "payments").to_dict()


def drive(chaos: Any, run: PlaybookRun, timeout: float = 120) -> None:
    """Stand in for beat and the approver until the run finishes."""
    from agents.audit import resolve_orphaned_calls

    def finished() -> bool:
        if chaos.worker.process.poll() is not None:
            # What supervisord does under `make run` (and the restart policy in compose/Kubernetes).
            chaos.worker.restarts_by_supervision = getattr(chaos.worker, "restarts_by_supervision", 0) + 1
            chaos.worker.start()
        reconcile()
        resolve_orphaned_calls()
        for waiting in StepRun.objects.filter(run=run, state="waiting_approval").select_related("approval"):
            if waiting.approval.state == Approval.State.PENDING:
                decide_approval(waiting.approval.pk, chaos.approvers.alice, "approve", "chaos trial")
        return PlaybookRun.objects.get(pk=run.pk).state == "finished"

    try:
        wait_for(finished, timeout=timeout, interval=0.3, message=f"run {run.pk} to finish")
    except BaseException:
        for step in StepRun.objects.filter(run=run).order_by("order"):
            print(f"  step {step.order} {step.name} {step.state} attempts={step.attempts} lease={step.lease_expires_at} "
                  f"error={step.error[:200]!r}")
        print(chaos.worker.log()[-3000:])
        raise


def check_invariants(chaos: Any, run: PlaybookRun, pods_before: set[str]) -> dict[str, Any]:
    """0 steps lost, 0 actions doubled, every action audited exactly once."""
    steps = {s.name: s for s in run.steps.all()}
    lost = [s.name for s in steps.values() if s.state not in StepRun.DONE_STATES]
    assert not lost, f"steps lost: {lost}"
    assert all(steps[n].state == "succeeded" for n in ("describe pod", "rca", "tell", "scale up", "restart pod",
                                                       "raise memory")), {n: (s.state, s.error) for n, s in steps.items()}
    # The cluster changed once per action.
    deployment = _deployment(chaos.sandbox)
    assert deployment["spec"]["replicas"] == 3
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["memory"] == "384Mi"
    target = steps["restart pod"].rendered_args["name"]
    gone = pods_before - pods(chaos.sandbox, "payments", "ledger")
    assert target in gone and len(gone) <= 2, gone  # the restarted pod (and the one the new template rolled)
    # Every action: its calls all completed, exactly one completion says it changed the cluster.
    keys = [f"steprun:{steps[n].pk}" for n in ("scale up", "restart pod", "raise memory")]
    unfinished = AuditEntry.objects.filter(action="tool_started", idempotency_key__in=keys, completion__isnull=True)
    assert not unfinished.exists(), list(unfinished.values("tool", "idempotency_key"))
    changed = {tool: AuditEntry.objects.filter(action="tool_call", tool=tool, effect="changed",
                                                idempotency_key__in=keys).count() for tool in MUTATING}
    assert changed == dict.fromkeys(MUTATING, 1), changed
    # Each approval was consumed by its own step's key and by nobody else.
    for name in ("scale up", "restart pod", "raise memory"):
        approval = steps[name].approval
        assert approval is not None and approval.used_key == f"steprun:{steps[name].pk}"
    return {"attempts": {n: s.attempts for n, s in steps.items()},
            "dead_calls": AuditEntry.objects.filter(action="tool_call", outcome="unknown",
                                                    idempotency_key__in=keys).count()}


def start_trial(chaos: Any) -> tuple[PlaybookRun, set[str]]:
    only_playbook(STEPS)
    before = pods(chaos.sandbox, "payments", "ledger")
    poll(chaos.cluster)
    return PlaybookRun.objects.get(incident__workload_name="ledger"), before


@pytest.mark.parametrize("repeat", range(REPEAT), ids=lambda n: f"r{n}")
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_worker_killed_at_a_random_point_of_a_step_loses_and_doubles_nothing(chaos, kind, repeat) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(f"{kind}-{repeat}-{os.environ.get('AIOPS_CHAOS_SEED', '13')}")
    run, before = start_trial(chaos)
    target = StepRun.objects.get(run=run, name=KINDS[kind])

    def reached() -> bool:
        for waiting in StepRun.objects.filter(run=run, state="waiting_approval").select_related("approval"):
            if waiting.approval.state == Approval.State.PENDING:
                decide_approval(waiting.approval.pk, chaos.approvers.alice, "approve", "chaos trial")
        row = StepRun.objects.get(pk=target.pk)
        # A MEDIUM/HIGH step runs twice: once to ask for its approval, then to act; kill in the second.
        acting = row.attempts >= 2 if kind in ("tool_medium", "tool_high") else True
        return acting and row.state not in ("pending", "queued", "waiting_approval")

    wait_for(reached, timeout=90, interval=0.005, message=f"the {kind} step to start")
    time.sleep(rng.uniform(0, 0.25))  # a random point of (or just after) the step
    state_at_kill = StepRun.objects.get(pk=target.pk).state
    killed_at = time.monotonic()
    chaos.worker.kill()
    chaos.worker.start()
    drive(chaos, run)
    took = time.monotonic() - killed_at
    run.refresh_from_db()
    figures = check_invariants(chaos, run, before)
    print(f"chaos kill kind={kind} repeat={repeat} step_state_at_kill={state_at_kill} finished_after={took:.1f}s "
          f"outcome={run.outcome} {figures}")
