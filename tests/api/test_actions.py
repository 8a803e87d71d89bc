"""Deciding approvals, closing incidents, starting and cancelling runs through the API: the same
services as chat and the console, so the same rules, refusals and audit entries."""

from __future__ import annotations

import pytest

from agents.models import Approval, AuditEntry
from playbooks.models import Incident, PlaybookRun

pytestmark = pytest.mark.django_db


def test_an_approver_decides_and_every_gate_rule_holds(people, api_as, ask_approval) -> None:  # type: ignore[no-untyped-def]
    approval = ask_approval()
    listed = api_as(people.carol, "read").get("/api/v1/approvals/").json()["results"]
    assert [(a["id"], a["state"], a["may_decide"]) for a in listed] == [(approval.pk, "pending", False)]

    refused = api_as(people.carol, "decide").post(f"/api/v1/approvals/{approval.pk}/decide/",
                                                   {"decision": "approve"}, format="json")
    assert refused.status_code == 403 and "carol may not decide" in refused.json()["detail"]
    assert AuditEntry.objects.filter(action="approval_refused", actor="carol", outcome="not_an_approver").exists()

    read_only = api_as(people.alice, "read").post(f"/api/v1/approvals/{approval.pk}/decide/",
                                                   {"decision": "approve"}, format="json")
    assert read_only.status_code == 403 and "lacks the 'decide' scope" in read_only.json()["detail"]
    assert Approval.objects.get(pk=approval.pk).state == "pending"

    alice = api_as(people.alice, "decide")
    bad = alice.post(f"/api/v1/approvals/{approval.pk}/decide/", {"decision": "maybe"}, format="json")
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "decision"
    ok = alice.post(f"/api/v1/approvals/{approval.pk}/decide/", {"decision": "approve", "reason": "looks right"},
                    format="json")
    assert ok.status_code == 200, ok.json()
    assert ok.json()["state"] == "approved" and ok.json()["decided_by"] == "alice"
    assert ok.json()["decision_reason"] == "looks right"
    again = api_as(people.bob, "decide").post(f"/api/v1/approvals/{approval.pk}/decide/", {"decision": "reject"},
                                              format="json")
    assert again.status_code == 409 and "already approved by alice" in again.json()["detail"]
    # Who did it, through which token: the gate's own entry names alice, the API's the token.
    assert AuditEntry.objects.filter(action="approval_decided", actor="alice", outcome="approved").count() == 1
    call = AuditEntry.objects.filter(action="api_call", outcome="ok").latest("id")
    assert call.actor.startswith("api:alice (token ") and "/decide/ -> 200" in call.detail
    assert api_as(people.alice, "read").get("/api/v1/approvals/").json()["results"] == []  # pending only
    read = AuditEntry.objects.filter(action="api_call").latest("id")  # every token use, reads too
    assert read.actor.startswith("api:alice (token ") and read.detail == "GET /api/v1/approvals/ -> 200"
    everything = api_as(people.alice, "read").get("/api/v1/approvals/?state=all").json()["results"]
    assert [a["state"] for a in everything] == ["approved"]


def test_a_high_risk_approval_needs_someone_other_than_its_requester(people, api_as, ask_approval) -> None:  # type: ignore[no-untyped-def]
    approval = ask_approval("drain_thing", requested_by=people.alice)
    own = api_as(people.alice, "decide").post(f"/api/v1/approvals/{approval.code}/decide/".replace(
        approval.code, str(approval.pk)), {"decision": "approve"}, format="json")
    assert own.status_code == 403 and "needs an approver other than the requester" in own.json()["detail"]
    assert api_as(people.bob, "decide").post(f"/api/v1/approvals/{approval.pk}/decide/", {"decision": "approve"},
                                             format="json").status_code == 200


def test_closing_an_incident_takes_the_right_to_decide_its_approvals(people, api_as, make_incident, no_playbooks) -> None:  # type: ignore[no-untyped-def]
    incident = make_incident()
    refused = api_as(people.carol, "decide").post(f"/api/v1/incidents/{incident.pk}/close/", {"reason": "fixed"},
                                                   format="json")
    assert refused.status_code == 403 and "carol may not close" in refused.json()["detail"]
    assert Incident.objects.get(pk=incident.pk).state == "open"
    assert AuditEntry.objects.filter(action="incident_closed", outcome="refused").count() == 1
    closed = api_as(people.alice, "decide").post(f"/api/v1/incidents/{incident.pk}/close/",
                                                  {"reason": "fixed by hand"}, format="json")
    assert closed.status_code == 200 and closed.json()["state"] == "resolved"
    entry = AuditEntry.objects.get(action="incident_closed", outcome="ok")
    assert entry.actor.startswith("api (token ") and entry.actor.endswith(":alice") and "fixed by hand" in entry.detail
    timeline = api_as(people.carol, "read").get(f"/api/v1/incidents/{incident.pk}/timeline/").json()
    assert any(line["word"] == "Resolved" for line in timeline)


def test_runs_start_and_cancel_for_those_who_may_act_on_the_incident(people, api_as, make_incident, seed_playbooks,  # type: ignore[no-untyped-def]
                                                                     cluster_row) -> None:
    incident = make_incident(cluster=cluster_row)
    carol = api_as(people.carol, "decide")
    assert carol.post("/api/v1/runs/", {"incident": incident.pk}, format="json").status_code == 403
    alice = api_as(people.alice, "decide")
    unknown = alice.post("/api/v1/runs/", {"incident": incident.pk, "playbook": "no_such"}, format="json")
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["field"] == "playbook"
    started = alice.post("/api/v1/runs/", {"incident": incident.pk, "playbook": "crash_loop_remediation"},
                         format="json")
    assert started.status_code == 201, started.json()
    run = started.json()
    assert run["playbook_name"] == "crash_loop_remediation" and run["state"] == "running" and run["steps"]
    twice = alice.post("/api/v1/runs/", {"incident": incident.pk}, format="json")
    assert twice.status_code == 409 and "already running" in twice.json()["detail"]

    assert carol.post(f"/api/v1/runs/{run['id']}/cancel/", {}, format="json").status_code == 403
    cancelled = alice.post(f"/api/v1/runs/{run['id']}/cancel/", {"reason": "doing it by hand"}, format="json")
    assert cancelled.status_code == 200 and cancelled.json()["outcome"] == "cancelled"
    assert "doing it by hand" in PlaybookRun.objects.get(pk=run["id"]).summary
    assert AuditEntry.objects.filter(action="run_cancelled", outcome="ok").count() == 1
    assert alice.post(f"/api/v1/runs/{run['id']}/cancel/", {}, format="json").status_code == 200  # already over
    assert api_as(people.carol, "read").get(f"/api/v1/runs/?incident={incident.pk}").json()["results"][0]["id"] == run["id"]
