"""The engine end to end: sandbox faults -> poll -> incident -> rule -> run -> LOW steps ->
approval -> action on the sandbox -> verify. Real PostgreSQL, Redis, worker, MCP server."""

from __future__ import annotations

from typing import Any

import pytest

from agents.models import Approval, AuditEntry
from agents.services import decide_approval, expire_due
from playbooks.models import Incident, PlaybookRun, Rule, StepRun
from playbooks.services.poll import poll
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration]


def _run(workload: str) -> PlaybookRun:
    return PlaybookRun.objects.select_related("incident").get(incident__workload_name=workload)


def _waiting(run: PlaybookRun) -> StepRun | None:
    return StepRun.objects.filter(run=run, state="waiting_approval").select_related("approval").first()


def _approve_until_finished(engine: Any, runs: list[PlaybookRun], timeout: float = 120) -> dict[str, list[str]]:
    """Approve every approval the runs ask for (alice), until all of them finish."""
    approved: dict[str, list[str]] = {run.playbook_name: [] for run in runs}

    def step() -> bool:
        pending = False
        for run in runs:
            run.refresh_from_db()
            if run.state == "finished":
                continue
            pending = True
            waiting = _waiting(run)
            if waiting is not None:
                decide_approval(waiting.approval.pk, engine.approvers.alice, "approve", "looks right")
                approved[run.playbook_name].append(waiting.tool)
        return not pending

    try:
        wait_for(step, timeout=timeout, interval=0.2, message="every run to finish")
    except BaseException:
        errors = [line[:800] for line in engine.worker.log().splitlines() if '"level":"error"' in line]
        print(_describe(runs), *errors[-5:], sep="\n")
        raise
    return approved


def _describe(runs: list[PlaybookRun]) -> str:
    lines = []
    for run in runs:
        run.refresh_from_db()
        lines.append(f"run {run.pk} {run.playbook_name} {run.state} {run.outcome} {run.summary[:300]}")
        for s in run.steps.order_by("order"):
            lines.append(f"   {s.order} {s.name} {s.state} risk={s.risk} att={s.attempts} err={s.error[:300]!r} out={s.output[:200]!r}")
    return "\n".join(lines)


def _pods(engine: Any, namespace: str, prefix: str) -> list[dict[str, Any]]:
    from kubernetes import client

    api = client.CoreV1Api(engine.sandbox.api_client())
    pods = api.list_namespaced_pod(namespace).to_dict()["items"]
    return [p for p in pods if p["metadata"]["name"].startswith(prefix + "-")]


def test_it_remediates_the_demo_faults_end_to_end(engine) -> None:  # type: ignore[no-untyped-def]
    from kubernetes import client

    ledger_before = {p["metadata"]["name"] for p in _pods(engine, "payments", "ledger")}
    assert poll(engine.cluster).outcome == "ok"
    crash, oom, node = _run("ledger"), _run("report-builder"), _run("node-4")
    assert (crash.playbook_name, oom.playbook_name, node.playbook_name) == (
        "crash_loop_remediation", "oom_kill_remediation", "node_not_ready_remediation")

    approved = _approve_until_finished(engine, [crash, oom, node])
    assert approved == {
        "crash_loop_remediation": ["restart_pod"],
        "oom_kill_remediation": ["patch_memory_limit"],
        "node_not_ready_remediation": ["cordon_node", "drain_node"],
    }
    for run in (crash, oom, node):
        run.refresh_from_db()
    assert (crash.outcome, oom.outcome, node.outcome) == ("resolved", "resolved", "mitigated"), [
        (r.playbook_name, r.outcome, r.summary) for r in (crash, oom, node)]

    # LOW steps ran at once, each through call_tool (audited); the actions ran once each.
    steps = {s.name: s for s in crash.steps.all()}
    assert steps["describe pod"].state == "succeeded" and steps["describe pod"].risk == "LOW"
    assert steps["describe pod"].approval is None and steps["describe pod"].audit.outcome == "ok"
    assert steps["restart pod"].approval.state == "approved" and steps["restart pod"].audit.outcome == "ok"
    assert steps["root cause"].state == "succeeded"
    assert AuditEntry.objects.filter(action="tool_call", tool="restart_pod", outcome="ok").count() == 1

    # The incidents: resolved by verify, the node's stays open (NotReady needs a person).
    assert Incident.objects.get(pk=crash.incident_id).state == "resolved"
    assert Incident.objects.get(pk=crash.incident_id).rca_report["failure_class"]
    assert Incident.objects.get(pk=oom.incident_id).state == "resolved"
    assert Incident.objects.get(pk=node.incident_id).state == "open"

    # What the sandbox shows: a new ledger pod, a raised memory limit, node-4 cordoned and empty.
    ledger_after = {p["metadata"]["name"] for p in _pods(engine, "payments", "ledger")}
    assert len(ledger_before - ledger_after) == 1
    apps = client.AppsV1Api(engine.sandbox.api_client())
    builder = apps.read_namespaced_deployment("report-builder", "data").to_dict()
    assert builder["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "512Mi"
    core = client.CoreV1Api(engine.sandbox.api_client())
    assert core.read_node("node-4").spec.unschedulable is True
    left = [p for p in core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-4").items
            if not any(ref.kind == "DaemonSet" for ref in p.metadata.owner_references or [])]
    assert left == []


def test_a_rejected_approval_ends_the_run_and_nothing_is_executed(engine) -> None:  # type: ignore[no-untyped-def]
    Rule.objects.exclude(name="crash_loop").update(enabled=False)
    before = {p["metadata"]["name"] for p in _pods(engine, "payments", "ledger")}
    poll(engine.cluster)
    run = _run("ledger")
    waiting = wait_for(lambda: _waiting(run), timeout=90, message="the restart approval")
    decide_approval(waiting.approval.code, engine.approvers.bob, "reject", "not during the sale")
    wait_for(lambda: PlaybookRun.objects.get(pk=run.pk).state == "finished", timeout=30, message="the run to end")
    run.refresh_from_db()
    assert run.outcome == "rejected"
    step = StepRun.objects.get(pk=waiting.pk)
    assert step.state == "rejected" and "rejected by bob: not during the sale" in step.error
    assert run.steps.get(name="verify").state == "cancelled"
    assert not AuditEntry.objects.filter(action="tool_call", tool="restart_pod").exists()
    assert {p["metadata"]["name"] for p in _pods(engine, "payments", "ledger")} == before
    assert Incident.objects.get(pk=run.incident_id).state == "open"


def test_an_expired_approval_ends_the_run_as_expired(engine) -> None:  # type: ignore[no-untyped-def]
    Rule.objects.exclude(name="oom_killed").update(enabled=False)
    poll(engine.cluster)
    run = _run("report-builder")
    waiting = wait_for(lambda: _waiting(run), timeout=90, message="the memory approval")
    Approval.objects.filter(pk=waiting.approval_id).update(expires_at=waiting.approval.requested_at)
    assert expire_due() >= 1
    run.refresh_from_db()
    assert (run.state, run.outcome) == ("finished", "expired")
    assert StepRun.objects.get(pk=waiting.pk).state == "expired"
    assert not AuditEntry.objects.filter(action="tool_call", tool="patch_memory_limit").exists()
