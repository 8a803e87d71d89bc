"""Clusters (credentials never returned), the tool registry, the audit log (admins only), and
questions for the assistant (answered by a real worker, as in chat)."""

from __future__ import annotations

import pytest

from agents.models import Message
from k8s.models import Cluster
from tests.conftest import wait_for
from tests.fakes.openai_server import text

pytestmark = pytest.mark.django_db


def test_clusters_are_created_and_changed_by_admins_and_never_show_their_kubeconfig(people, api_as) -> None:  # type: ignore[no-untyped-def]
    api = api_as(people.root, "admin")
    created = api.post("/api/v1/clusters/", {"name": "edge-1", "kubeconfig_path": "/etc/aiops/edge-1.yaml"},
                       format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["has_kubeconfig"] is True and "kubeconfig_path" not in body and body["reachable"] is False
    assert "/etc/aiops/edge-1.yaml" not in str(api.get("/api/v1/clusters/").json())
    missing = api.post("/api/v1/clusters/", {"name": "edge-2"}, format="json")
    assert missing.status_code == 400 and "kubeconfig path or choose in-cluster" in missing.json()["detail"]
    bad_name = api.post("/api/v1/clusters/", {"name": "Edge_2", "in_cluster": True}, format="json")
    assert bad_name.json()["errors"][0]["field"] == "name"
    twice = api.post("/api/v1/clusters/", {"name": "edge-1", "in_cluster": True}, format="json")
    assert twice.status_code == 400 and twice.json()["errors"][0]["field"] == "name"
    changed = api.patch(f"/api/v1/clusters/{body['id']}/", {"enabled": False, "poll_interval": 60}, format="json")
    assert changed.status_code == 200, changed.json()
    assert (changed.json()["enabled"], changed.json()["poll_interval"]) == (False, 60)
    assert Cluster.objects.get(name="edge-1").kubeconfig_path == "/etc/aiops/edge-1.yaml"
    assert api_as(people.root, "write").post("/api/v1/clusters/", {"name": "x", "in_cluster": True},
                                             format="json").status_code == 403  # the admin scope
    assert api_as(people.alice, "admin").patch(f"/api/v1/clusters/{body['id']}/", {"enabled": True},
                                               format="json").status_code == 403  # the admin's permission
    assert api_as(people.carol, "read").get(f"/api/v1/clusters/{body['id']}/").status_code == 200


def test_the_tool_registry_lists_risk_and_schema(people, api_as, registry) -> None:  # type: ignore[no-untyped-def]
    api = api_as(people.carol, "read")
    tools = api.get("/api/v1/tools/?risk=HIGH").json()["results"]
    assert [(t["name"], t["server"], t["risk"]) for t in tools] == [("drain_thing", "demo", "HIGH")]
    assert api.get("/api/v1/tools/restart_thing/").json()["input_schema"]["required"] == ["name"]


def test_the_audit_log_is_for_admins_and_filters(people, api_as, ask_approval) -> None:  # type: ignore[no-untyped-def]
    approval = ask_approval()
    assert api_as(people.alice, "admin").get("/api/v1/audit/").status_code == 403  # not the admin's right
    assert api_as(people.root, "read").get("/api/v1/audit/").status_code == 403  # not the scope
    api = api_as(people.root, "admin")
    entries = api.get(f"/api/v1/audit/?action=approval_requested&approval={approval.pk}").json()["results"]
    assert [(e["action"], e["approval"], e["tool"]) for e in entries] == [("approval_requested", approval.pk,
                                                                           "restart_thing")]
    assert api.get("/api/v1/audit/?since=yesterday").json()["errors"][0]["field"] == "since"
    assert api.delete(f"/api/v1/audit/{entries[0]['id']}/").status_code == 405


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_question_is_answered_by_the_same_assistant_as_chat(people, api_as, celery_worker, fake_llm) -> None:  # type: ignore[no-untyped-def]
    fake_llm.script(text("Two pods of shop/web are crash looping."))
    api = api_as(people.carol, "read")
    asked = api.post("/api/v1/ask/", {"question": "what is failing in shop?"}, format="json")
    assert asked.status_code == 202 and asked["Location"] == f"/api/v1/ask/{asked.json()['id']}/"
    assert asked.json()["state"] == "pending" and asked.json()["answer"] is None
    answered = wait_for(lambda: (r := api.get(asked["Location"]).json())["state"] == "answered" and r, timeout=60,
                        message="the worker to answer")
    assert answered["answer"]["text"] == "Two pods of shop/web are crash looping."
    assert "what is failing in shop?" in fake_llm.received_text()
    assert Message.objects.get(pk=answered["id"]).conversation.channel_kind == "api"
    assert api_as(people.alice, "read").get(asked["Location"]).status_code == 404  # only its asker sees it
    assert api.post("/api/v1/ask/", {"question": ""}, format="json").json()["errors"][0]["field"] == "question"
