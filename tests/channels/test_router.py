"""The chat router: typed decisions, commands, free text, and clear answers to bad input."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from agents.approvals import request_approval
from agents.models import Approval
from channels.models import Identity, OutboundMessage
from tests.channels import platforms
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db

CHANNEL = "C0OPS"


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def slack_people(approvers):  # type: ignore[no-untyped-def]
    for user in (approvers.alice, approvers.carol):
        Identity.objects.create(platform="slack", platform_user_id=f"U0{user.username.upper()}", user=user)
    return approvers


@pytest.fixture
def k8s_tools(db):  # type: ignore[no-untyped-def]
    """Our Kubernetes tools in the registry (requesting an approval needs no server)."""
    from agents.registry import register_builtin

    return register_builtin("http://127.0.0.1:9/mcp")


def said(client: Any, text: str, user: str = "U0ALICE") -> list[str]:
    """Send `text` as a Slack message; return the replies it produced (new outbox rows)."""
    before = set(OutboundMessage.objects.values_list("pk", flat=True))
    assert platforms.slack_message(client, text, user=user, channel=CHANNEL).status_code == 200
    return [m.text for m in OutboundMessage.objects.exclude(pk__in=before).order_by("pk")]


def test_help_works_with_bang_and_slash_and_unknown_commands_say_so(client, chat, slack_people) -> None:  # type: ignore[no-untyped-def]
    before = {command: _metric("aiops_chat_commands_total", command=command) for command in ("help", "unknown")}
    [reply] = said(client, "!help")
    assert "/k8s restart" in reply and "approve <code>" in reply
    assert said(client, "/help")[0] == reply
    assert said(client, "!frobnicate") == ["Unknown command `/frobnicate`. Try /help."]
    assert _metric("aiops_chat_commands_total", command="help") == before["help"] + 2
    assert _metric("aiops_chat_commands_total", command="unknown") == before["unknown"] + 1  # never the typed name


def test_a_stranger_is_told_how_to_get_linked_and_nothing_runs(client, chat, k8s_tools) -> None:  # type: ignore[no-untyped-def]
    [reply] = said(client, "!k8s restart shop/web", user="U0NOBODY")
    assert "I don't know who you are" in reply and "`U0NOBODY`" in reply
    assert not Approval.objects.exists()
    [reply] = said(client, "what is broken?", user="U0NOBODY")
    assert "I don't know who you are" in reply


def test_typed_approve_and_reject_decide_as_the_person(client, chat, slack_people, fake_mcp) -> None:  # type: ignore[no-untyped-def]
    approval = request_approval("fake__set_value", {"key": "typed", "value": "1"}, reason="test", origin="playbook")
    outcomes = ("refused", "approved", "already_decided")
    before = {outcome: _metric("aiops_chat_approval_decisions_total", platform="slack", outcome=outcome) for outcome in outcomes}
    [refused] = said(client, f"reject {approval.code.lower()} not now", user="U0CAROL")
    assert refused.startswith("Refused:") and "carol may not decide" in refused
    [approved] = said(client, f"approve {approval.code}")
    assert approved == f"Approved `{approval.code}` (fake__set_value) as alice."
    approval.refresh_from_db()
    assert (approval.state, approval.decided_by.username) == ("approved", "alice")
    [again] = said(client, f"reject {approval.code}")
    assert "already approved by alice" in again
    [unknown] = said(client, "approve ZZZZZZ")
    assert "no approval" in unknown
    moved = {outcome: _metric("aiops_chat_approval_decisions_total", platform="slack", outcome=outcome) - before[outcome]
             for outcome in outcomes}
    assert moved == {"refused": 2, "approved": 1, "already_decided": 1}  # carol and the unknown code are refusals


def test_k8s_changes_become_approval_requests_with_buttons_and_nothing_else(client, chat, slack_people, k8s_tools) -> None:  # type: ignore[no-untyped-def]
    replies = said(client, "!k8s scale shop/web 3")
    approval = Approval.objects.get()
    assert (approval.tool, approval.arguments, approval.origin) == (
        "scale_deployment", {"namespace": "shop", "name": "web", "replicas": 3}, "chat")
    assert approval.requested_by.username == "alice" and approval.origin_ref == f"slack:{CHANNEL}"
    assert any(approval.code in text for text in replies)
    buttons = OutboundMessage.objects.get(approval_id=approval.pk, payload__buttons=True)
    assert (buttons.kind, buttons.address) == ("slack", CHANNEL)

    for command, tool, args in [
        ("!k8s restart payments/ledger", "restart_deployment", {"namespace": "payments", "name": "ledger"}),
        ("!k8s restart pod payments ledger-abc", "restart_pod", {"namespace": "payments", "name": "ledger-abc"}),
        ("!k8s rollback shop/web 4", "rollback_deployment", {"namespace": "shop", "name": "web", "revision": 4}),
        ("!k8s cordon node-4", "cordon_node", {"name": "node-4"}),
        ("!k8s drain node-4", "drain_node", {"name": "node-4"}),
    ]:
        said(client, command)
        latest = Approval.objects.order_by("-pk").first()
        assert (latest.tool, latest.arguments) == (tool, args), command


@pytest.mark.parametrize(("command", "expected"), [
    ("!k8s scale shop/web lots", "replicas is a whole number"),
    ("!k8s scale shop/web", "Usage: `/k8s scale"),
    ("!k8s restart", "Usage: `/k8s restart"),
    ("!k8s restart Shop/Web_1", "'Shop' is not a valid Kubernetes name"),
    ("!k8s logs", "Usage: `/k8s logs"),
    ("!k8s describe thing x", "Usage: `/k8s describe"),
    ("!k8s explode", "Unknown `/k8s explode`"),
    ("!incident show abc", "Usage: `/incident list`"),
    ("!incident show 999999", "There is no incident #999999."),
])
def test_bad_commands_get_a_reason_and_request_nothing(client, chat, slack_people, k8s_tools, command, expected) -> None:  # type: ignore[no-untyped-def]
    [reply] = said(client, command)
    assert expected in reply
    assert not Approval.objects.exists()


def test_incident_commands(client, chat, slack_people, make_incident, no_playbooks) -> None:  # type: ignore[no-untyped-def]
    assert said(client, "!incident list") == ["No open incidents. 🎉"]
    incident = make_incident()
    [listing] = said(client, "!incident list")
    assert f"#{incident.pk} crash-looping: Deployment shop/web" in listing
    [details] = said(client, f"!incident show {incident.pk}")
    assert "web crash-looping" in details and "web-5d9c7-abcde" in details
    [closed] = said(client, f"!incident close {incident.pk} fixed by hand")
    assert closed == f"Closed incident #{incident.pk} (fixed by hand)."
    incident.refresh_from_db()
    assert incident.state == "resolved"
    assert said(client, f"!incident close {incident.pk}") == [f"Incident #{incident.pk} is already resolved."]
    assert said(client, "!alert list") == ["No Alertmanager alerts are firing."]
    alert = make_incident(source="alertmanager", alertname="KubePodCrashLooping", fingerprint="f00d",
                          workload_name="", title="Pod shop/web is crash looping")
    [alerts] = said(client, "!alert list")
    assert f"#{alert.pk} KubePodCrashLooping (critical) Pod shop/web is crash looping" in alerts


def test_approval_list_shows_pending_codes(client, chat, slack_people, fake_mcp) -> None:  # type: ignore[no-untyped-def]
    assert said(client, "!approval list") == ["No approvals are pending."]
    approval = request_approval("fake__set_value", {"key": "k", "value": "v"}, reason="test", origin="playbook")
    [listing] = said(client, "!approval list")
    assert f"`{approval.code}` Fake set value (key=k, value=v), HIGH risk (`fake__set_value`)" in listing


def test_model_reset_and_status_are_answered_by_the_assistant_services(client, chat, slack_people, no_llm) -> None:  # type: ignore[no-untyped-def]
    [status] = said(client, "!status")
    assert status.startswith("Model: ")
    [model] = said(client, "!model nonsense-model")
    assert "Unknown model 'nonsense-model'" in model
    [reset] = said(client, "!reset")
    assert "new conversation" in reset


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_free_text_is_answered_by_the_assistant_through_the_outbox(client, chat, slack_people, fake_llm,  # type: ignore[no-untyped-def]
                                                                   celery_worker) -> None:
    from tests.fakes.openai_server import text

    fake_llm.script(text("The ledger pods crash because the database password is wrong."))
    assert said(client, "why is ledger crashing?") == []  # answered later, by a task
    wait_for(lambda: any("database password" in m["text"] for m in chat.slack.channel_messages(CHANNEL)),
             message="the assistant's answer in Slack")
    assert "why is ledger crashing?" in fake_llm.received_text()
