"""Finding 3 of issue 13: a worker killed during a mutating tool call left the action unaudited.

Now the call is audited before it is sent (`tool_started`) and completed after it; a dead
worker's call is completed as `unknown` by the retry or by the reconciler, which re-reads the
cluster, and every change to the cluster has exactly one audit entry that says it happened.
Real worker (SIGKILLed with its pool), real MCP server, real sandbox API, real PostgreSQL/Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY

from agents.models import AuditEntry
from agents.services import decide_approval
from playbooks.engine import reconcile
from playbooks.models import PlaybookRun, Rule, StepRun
from playbooks.services.poll import poll
from tests.conftest import ROOT, wait_for, worker_env
from tests.plugins.chaos import hold_response

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

RESTART = {"name": "restart pod", "kind": "tool", "tool": "restart_pod",
           "args": {"namespace": "{{ namespace }}", "name": "{{ pod }}"}, "timeout_seconds": 120}
VERIFY = {"name": "verify", "kind": "verify", "args": {"checks": 10, "interval": 1}, "timeout_seconds": 30}


def only_playbook(steps: list[dict[str, Any]], finding_type: str = "crash_loop") -> None:
    from playbooks.models import Playbook, Step

    Rule.objects.update(enabled=False)
    playbook = Playbook.objects.create(name="chaos_playbook")
    for order, step in enumerate(steps, start=1):
        Step.objects.create(playbook=playbook, order=order, **step)
    Rule.objects.create(name="chaos_rule", playbook=playbook, finding_types=[finding_type], priority=1000)


def pods(sandbox: Any, namespace: str, prefix: str) -> set[str]:
    from kubernetes import client

    items = client.CoreV1Api(sandbox.api_client()).list_namespaced_pod(namespace).to_dict()["items"]
    return {p["metadata"]["name"] for p in items if p["metadata"]["name"].startswith(prefix + "-")}


def resolved(effect: str) -> float:
    return REGISTRY.get_sample_value("aiops_tool_calls_unfinished_resolved_total",
                                     {"tool": "restart_pod", "effect": effect}) or 0.0


def test_a_worker_killed_after_the_cluster_acted_leaves_one_audit_entry_that_says_so(chaos) -> None:  # type: ignore[no-untyped-def]
    only_playbook([RESTART, VERIFY])
    before = pods(chaos.sandbox, "payments", "ledger")
    poll(chaos.cluster)
    run = PlaybookRun.objects.get(incident__workload_name="ledger")
    waiting = wait_for(lambda: run.steps.filter(state="waiting_approval").select_related("approval").first(),
                       timeout=60, message="the restart approval")
    target = waiting.rendered_args["name"]
    with hold_response(chaos.sandbox, "DELETE", rf"/pods/{target}$") as hold:
        decide_approval(waiting.approval.pk, chaos.approvers.alice, "approve")
        assert hold.applied.wait(60), "the worker never sent the DELETE"
        # The pod is deleted on the cluster; the worker waits for the answer. Kill it now.
        chaos.worker.kill()
    assert target not in pods(chaos.sandbox, "payments", "ledger")
    started = AuditEntry.objects.get(action="tool_started", tool="restart_pod")
    assert started.outcome == "started" and started.idempotency_key == f"steprun:{waiting.pk}"
    assert not AuditEntry.objects.filter(action="tool_call", tool="restart_pod").exists()

    chaos.worker.start()
    t_kill = time.monotonic()

    def finished() -> bool:
        reconcile()
        return PlaybookRun.objects.get(pk=run.pk).state == "finished"

    wait_for(finished, timeout=120, interval=0.5, message="the run to finish after the kill")
    step = StepRun.objects.get(pk=waiting.pk)
    assert step.state == "succeeded", step.error
    recovery = time.monotonic() - t_kill
    assert recovery < 60, f"the killed step took {recovery:.0f}s to finish"

    # The dead call: completed as unknown, with what the re-read saw, and the retry linked to it.
    dead = AuditEntry.objects.get(completes=started)
    assert dead.outcome == "unknown" and dead.effect == "changed", dead.detail
    assert f"pod payments/{target} is gone" in dead.detail
    retry = AuditEntry.objects.get(action="tool_started", tool="restart_pod", retry_of=started)
    retry_done = AuditEntry.objects.get(completes=retry)
    assert retry_done.outcome == "ok" and retry_done.effect == "unchanged", retry_done.detail
    assert step.audit_id == retry_done.pk
    # One action on the cluster, one entry that says it happened.
    assert AuditEntry.objects.filter(tool="restart_pod", action="tool_call", effect="changed").count() == 1
    after = pods(chaos.sandbox, "payments", "ledger")
    assert before - after == {target} and len(after) == len(before)


CALL = """
import django, sys
django.setup()
from agents.services import call_tool
call_tool("restart_pod", {"namespace": "payments", "name": sys.argv[1]}, actor="playbook:test", reason="test",
          approval=int(sys.argv[2]), idempotency_key="approval:" + sys.argv[2])
"""


def test_a_dead_call_with_no_retry_is_resolved_by_the_reconciler_from_a_re_read(chaos) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from django.utils import timezone

    from agents.audit import resolve_orphaned_calls
    from agents.services import request_approval

    target = sorted(pods(chaos.sandbox, "payments", "ledger"))[0]
    # A playbook-origin approval that no step waits on: nobody but our caller acts on it.
    approval = request_approval("restart_pod", {"namespace": "payments", "name": target}, reason="test",
                                origin="playbook", requester="alice")
    decide_approval(approval.pk, chaos.approvers.bob, "approve")
    with hold_response(chaos.sandbox, "DELETE", rf"/pods/{target}$") as hold:
        caller = subprocess.Popen([sys.executable, "-c", CALL, target, str(approval.pk)], cwd=ROOT,
                                  env=worker_env({"AIOPS_MCP_TOKEN": chaos.mcp.token}))
        assert hold.applied.wait(60), "the call never reached the cluster"
        os.kill(caller.pid, signal.SIGKILL)
        caller.wait(10)
    started = AuditEntry.objects.get(action="tool_started", tool="restart_pod")
    changed_before = resolved("changed")
    assert resolve_orphaned_calls() == 0  # a live call could still be running: not yet
    assert resolve_orphaned_calls(timezone.now() + timedelta(minutes=10)) == 1
    dead = AuditEntry.objects.get(completes=started)
    assert (dead.outcome, dead.effect, dead.actor) == ("unknown", "changed", "system:reconciler")
    assert "re-read of the cluster: pod payments/" in dead.detail.lower() and "is gone" in dead.detail
    # The re-read itself is a LOW read, audited like any other.
    assert AuditEntry.objects.filter(tool="describe_pod", actor="system:reconciler").count() == 1
    assert resolve_orphaned_calls(timezone.now() + timedelta(minutes=10)) == 0  # once
    assert resolved("changed") == changed_before + 1  # operators see dead calls being resolved


@pytest.mark.django_db
def test_an_unfinished_call_is_not_inferred_to_have_changed_what_another_call_already_changed() -> None:
    """Found by the kill matrix at load 20: a step's lease lapsed while its starved worker still
    ran, so three attempts of one scale overlapped. The first completed itself `changed`; the
    third found nothing to do and inferred that the second (still unanswered) had made the change:
    two `changed` entries for one change. One action (idempotency key) changes the cluster once."""
    from agents.audit import begin_call, complete_call, resolve_unfinished

    call = {"actor": "playbook:chaos", "tool": "scale_deployment", "server": "kubernetes", "risk": "MEDIUM",
            "args": {"namespace": "payments", "name": "ledger", "replicas": 3}, "reason": "chaos",
            "key": "steprun:999999", "approval": None}
    first, _ = begin_call(**call)
    second, _ = begin_call(**call)  # the re-sent attempt, while the first is still in flight
    complete_call(first, outcome="ok", detail="scaled deployment payments/ledger from 1 to 3 replicas",
                  effect="changed")
    third, orphans = begin_call(**call)
    assert orphans == [second]
    complete_call(third, outcome="ok", detail="deployment payments/ledger already has 3 replicas; nothing to do",
                  effect="unchanged")
    resolve_unfinished(orphans, retry=third, retry_effect="unchanged", by="system:test")
    resolved = AuditEntry.objects.get(completes=second)
    assert resolved.outcome == "unknown" and resolved.effect == "unchanged", resolved.detail
    assert f"#{AuditEntry.objects.get(completes=first).pk} already records the change" in resolved.detail
    changed = AuditEntry.objects.filter(action="tool_call", idempotency_key="steprun:999999", effect="changed")
    assert changed.count() == 1
