"""An approval decided through the API runs its step exactly as one decided in chat: the same
`decide_approval`, the same receiver resuming the run, the same worker calling the tool once on
the sandbox, the same verification. Real PostgreSQL, Redis, worker, MCP server and sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from agents.models import AuditEntry
from playbooks.models import Incident, PlaybookRun, Rule, StepRun
from playbooks.services.poll import poll
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration]


def _pods(engine: Any) -> set[str]:
    pods = k8s.CoreV1Api(engine.sandbox.api_client()).list_namespaced_pod("shop").to_dict()["items"]
    return {p["metadata"]["name"] for p in pods if p["metadata"]["name"].startswith("cart-")}


def test_an_approval_decided_through_the_api_restarts_the_workload_once_and_verifies(engine, token_for) -> None:  # type: ignore[no-untyped-def]
    from rest_framework.test import APIClient

    Rule.objects.exclude(name="crash_loop").update(enabled=False)
    before = _pods(engine)
    engine.sandbox.fault("crash_loop", "shop/cart")
    engine.sandbox.clear("payments/ledger")
    engine.sandbox.tick(2)
    poll(engine.cluster)
    run = PlaybookRun.objects.get(incident__workload_name="cart")
    waiting = wait_for(lambda: StepRun.objects.filter(run=run, state="waiting_approval").select_related("approval")
                       .first(), timeout=90, message="the restart approval")
    assert waiting.tool == "restart_workload"

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(engine.approvers.alice, 'decide')}")
    pending = api.get("/api/v1/approvals/").json()["results"]
    assert [(a["id"], a["may_decide"], a["step"]["run"]) for a in pending] == [(waiting.approval_id, True, run.pk)]
    decided = api.post(f"/api/v1/approvals/{waiting.approval_id}/decide/", {"decision": "approve", "reason": "go"},
                       format="json")
    assert decided.status_code == 200 and decided.json()["state"] == "approved"

    wait_for(lambda: PlaybookRun.objects.get(pk=run.pk).state == "finished", timeout=120, message="the run to end")
    detail = api.get(f"/api/v1/runs/{run.pk}/").json()
    assert detail["outcome"] == "resolved", detail
    steps = {s["name"]: s for s in detail["steps"]}
    restart = steps["restart workload"]
    assert restart["state"] == "succeeded" and restart["approval"] == waiting.approval_id
    assert restart["args"]["kind"] == "Deployment" and restart["args"]["name"] == "cart"
    assert steps["verify"]["state"] == "succeeded"
    # Once, audited with the approval and the person who decided it.
    calls = AuditEntry.objects.filter(action="tool_call", tool="restart_workload", outcome="ok")
    assert calls.count() == 1 and calls.get().approval_id == waiting.approval_id
    assert AuditEntry.objects.filter(action="approval_decided", actor="alice", approval=waiting.approval_id).exists()
    assert Incident.objects.get(pk=run.incident_id).state == "resolved"
    assert not before & _pods(engine)  # every pod replaced by the restart
