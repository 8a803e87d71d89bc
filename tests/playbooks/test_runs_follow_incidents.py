"""Runs follow their incident, and people see why nothing ran: end to end on the sandbox with
the engine's real worker, our MCP server and the chat fakes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from agents.models import Approval, AuditEntry
from agents.services import ApprovalError, decide_approval
from channels.models import ChannelTarget, Identity, MessageState, OutboundMessage
from playbooks.models import Incident, PlaybookRun, Rule, StepRun
from playbooks.services.poll import poll
from tests.channels import platforms
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration]

TG_CHAT, SLACK_CHANNEL, DISCORD_CHANNEL = "-1001234", "C0OPS", "700000000000000001"
CHAT_KINDS = ("telegram", "slack", "discord")


def _crash_cart(engine: Any) -> None:
    Rule.objects.exclude(name="crash_loop").update(enabled=False)
    engine.sandbox.fault("crash_loop", "shop/cart")  # every pod; a Go panic: the RCA allows a restart
    engine.sandbox.clear("payments/ledger")
    engine.sandbox.clear("data/report-builder")
    engine.sandbox.clear("node-4")
    engine.sandbox.tick(2)


def _waiting_approval(workload: str) -> Approval:
    def waiting() -> StepRun | None:
        return StepRun.objects.filter(run__incident__workload_name=workload, state="waiting_approval") \
            .select_related("approval").first()

    return wait_for(waiting, timeout=90, message=f"the {workload} run to ask for an approval").approval


@pytest.fixture
def shop_chat(engine, chat):  # type: ignore[no-untyped-def]
    for name, kind, address in (("tg", "telegram", TG_CHAT), ("slack", "slack", SLACK_CHANNEL),
                                ("discord", "discord", DISCORD_CHANNEL)):
        ChannelTarget.objects.create(name=name, kind=kind, address=address, namespace_regex="shop")
    Identity.objects.create(platform="telegram", platform_user_id="5003", user=engine.approvers.carol)
    Identity.objects.create(platform="telegram", platform_user_id="5001", user=engine.approvers.alice)
    return engine


@pytest.mark.django_db(transaction=True)
def test_an_incident_that_resolves_while_its_approval_waits_cancels_the_approval_everywhere_and_the_run(
    shop_chat, chat  # type: ignore[no-untyped-def]
) -> None:
    engine = shop_chat
    _crash_cart(engine)
    poll(engine.cluster)
    approval = _waiting_approval("cart")
    assert approval.tool == "restart_workload"
    incident = Incident.objects.get(workload_name="cart", state="open")
    wait_for(lambda: OutboundMessage.objects.filter(approval_id=approval.pk, kind__in=CHAT_KINDS,
                                                    state=MessageState.DELIVERED).count() == 3,
             message="the approval on all three platforms")
    tg = next(m for m in chat.telegram.chat_messages(TG_CHAT) if approval.code in m["text"])
    dc = next(m for m in chat.discord.channel_messages(DISCORD_CHANNEL) if approval.code in m["content"])
    sl = next(m for m in chat.slack.channel_messages(SLACK_CHANNEL) if approval.code in m.get("text", ""))
    assert "reply_markup" in tg

    # The cart recovers by itself (the fault clears) and the poll resolves the incident.
    engine.sandbox.clear("shop/cart")

    def resolved() -> bool:
        engine.sandbox.tick()
        poll(engine.cluster)
        return Incident.objects.get(pk=incident.pk).state == "resolved"

    wait_for(resolved, timeout=60, interval=0.5, message="the incident to resolve")
    wait_for(lambda: PlaybookRun.objects.get(incident=incident).state == "finished", timeout=60,
             message="the run to end")
    run = PlaybookRun.objects.get(incident=incident)
    assert run.outcome == "cancelled"
    assert run.summary.startswith(f"cancelled: incident #{incident.pk} was resolved (not seen for")
    approval.refresh_from_db()
    assert approval.state == "cancelled" and approval.decision_reason.startswith(f"incident #{incident.pk} was resolved")
    assert run.steps.get(approval=approval).state == "cancelled"
    assert AuditEntry.objects.filter(approval=approval, action="approval_decided", outcome="cancelled").count() == 1

    # Every platform's copy says so, without buttons.
    def edited() -> bool:
        return ("Cancelled" in chat.telegram.message(TG_CHAT, tg["message_id"])["text"]
                and "Cancelled" in chat.discord.messages[dc["id"]]["content"]
                and "Cancelled" in chat.slack.message(SLACK_CHANNEL, sl["ts"]).get("text", ""))

    wait_for(edited, timeout=60, message="every copy of the approval message to say it was cancelled")
    assert "reply_markup" not in chat.telegram.message(TG_CHAT, tg["message_id"])
    assert not chat.discord.messages[dc["id"]].get("components")
    wait_for(lambda: OutboundMessage.objects.filter(approval_id=approval.pk, operation="edit", kind__in=CHAT_KINDS,
                                                    state=MessageState.DELIVERED).count() == 3,
             message="the three edits to be recorded as delivered")

    # Approving it now does nothing: nothing runs against a closed incident.
    with pytest.raises(ApprovalError, match="already cancelled"):
        decide_approval(approval.pk, engine.approvers.alice, "approve")
    assert not AuditEntry.objects.filter(action="tool_call", tool="restart_workload").exists()


@pytest.mark.django_db(transaction=True)
def test_only_someone_who_may_decide_its_approvals_closes_an_incident_and_its_run_ends(
    shop_chat, chat, client  # type: ignore[no-untyped-def]
) -> None:
    engine = shop_chat
    _crash_cart(engine)
    poll(engine.cluster)
    approval = _waiting_approval("cart")
    incident = Incident.objects.get(workload_name="cart", state="open")

    # carol may not decide approvals: refused in chat, in the console and in the admin; audited.
    platforms.telegram_message(client, f"/incident close {incident.pk} not needed", user_id=5003)
    wait_for(lambda: any(f"carol may not close incident #{incident.pk}" in m["text"]
                         for m in chat.telegram.chat_messages(-1001234)), message="the refusal in chat")
    client.force_login(engine.approvers.carol)
    response = client.post(f"/console/incidents/{incident.pk}/close", {"reason": "nope"})
    assert response.status_code == 302
    assert Incident.objects.get(pk=incident.pk).state == "open"
    assert Approval.objects.get(pk=approval.pk).state == "pending"
    refusals = AuditEntry.objects.filter(action="incident_closed", outcome="refused")
    assert sorted(refusals.values_list("actor", flat=True)) == ["telegram:carol", "web:carol"]

    # alice may: the incident closes, the run ends cancelled, its approval too.
    platforms.telegram_message(client, f"/incident close {incident.pk} fixed by hand", user_id=5001)
    wait_for(lambda: Incident.objects.get(pk=incident.pk).state == "resolved", message="the incident to close")
    closed = AuditEntry.objects.get(action="incident_closed", outcome="ok")
    assert closed.actor == "telegram:alice" and "fixed by hand" in closed.detail
    wait_for(lambda: PlaybookRun.objects.get(incident=incident).state == "finished", timeout=60, message="the run")
    run = PlaybookRun.objects.get(incident=incident)
    assert run.outcome == "cancelled" and "closed from telegram by alice: fixed by hand" in run.summary
    assert Approval.objects.get(pk=approval.pk).state == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_the_console_says_why_nothing_ran_and_an_approver_starts_the_playbook_from_there(
    shop_chat, chat, client  # type: ignore[no-untyped-def]
) -> None:
    from channels.router import _incident_details

    engine = shop_chat
    _crash_cart(engine)
    # The crash_loop rule ran for shop/cart a minute ago (another incident, since resolved).
    rule = Rule.objects.get(name="crash_loop")
    earlier = Incident.objects.create(
        cluster=engine.cluster, workload_kind="Deployment", namespace="shop", workload_name="cart",
        primary_type="crash_loop", state="resolved", opened_at=timezone.now() - timedelta(minutes=5),
        last_seen_at=timezone.now() - timedelta(minutes=2), resolved_at=timezone.now() - timedelta(minutes=1))
    before = PlaybookRun.objects.create(
        incident=earlier, cluster=engine.cluster, rule=rule, playbook=rule.playbook, playbook_name=rule.playbook.name,
        state="finished", outcome="resolved", created_at=timezone.now() - timedelta(minutes=4),
        finished_at=timezone.now() - timedelta(minutes=2))
    poll(engine.cluster)
    incident = Incident.objects.get(workload_name="cart", state="open")
    assert not incident.runs.exists()
    until = (before.created_at + timedelta(seconds=rule.cooldown_seconds)).strftime("%H:%M")
    text = (f"rule crash_loop matched but is in cooldown until {until} UTC because of run #{before.pk} "
            "(crash_loop_remediation, resolved)")
    assert incident.no_run_reason["code"] == "cooldown" and incident.no_run_reason["text"] == text
    assert text in _incident_details(incident)
    wait_for(lambda: any(text in m["text"] and "/incident run" in m["text"]
                         for m in chat.telegram.chat_messages(TG_CHAT)), message="the notification with the reason")

    # The incident page shows it; carol may not start the run, alice may, and its restart still
    # goes through the risk gate.
    client.force_login(engine.approvers.carol)
    page = client.get(f"/console/incidents/{incident.pk}").content.decode()
    assert text in page and "Start the playbook anyway" not in page
    client.post(f"/console/incidents/{incident.pk}/run", {})
    assert not incident.runs.exists()
    client.force_login(engine.approvers.alice)
    page = client.get(f"/console/incidents/{incident.pk}").content.decode()
    assert text in page and "Start the playbook anyway" in page
    response = client.post(f"/console/incidents/{incident.pk}/run", {"playbook": ""}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "Started playbook crash_loop_remediation" in response.content.decode()
    run = PlaybookRun.objects.get(incident=incident)
    started = AuditEntry.objects.get(action="run_started", outcome="ok")
    assert started.actor == "web:alice" and started.arguments["run"] == run.pk
    assert AuditEntry.objects.get(action="run_started", outcome="refused").actor == "web:carol"
    approval = _waiting_approval("cart")
    assert approval.tool == "restart_workload" and approval.state == "pending"
    assert Incident.objects.get(pk=incident.pk).no_run_reason is None


@pytest.mark.django_db(transaction=True)
def test_no_approval_is_requested_for_an_incident_that_closed_before_the_step_asked(
    make_incident, sandbox_cluster, approvers, settings  # type: ignore[no-untyped-def]
) -> None:
    from agents.registry import register_builtin
    from playbooks.engine import create_run, execute_step
    from playbooks.models import Playbook, Step

    settings.AIOPS_AUTO_REMEDIATION = True
    register_builtin("http://127.0.0.1:9/mcp")  # the registry's risk classes; nothing is called
    playbook = Playbook.objects.create(name="restart_only")
    Step.objects.create(playbook=playbook, order=1, name="restart pod", kind="tool", tool="restart_pod",
                        args={"namespace": "{{ namespace }}", "name": "{{ pod }}"})
    rule = Rule.objects.create(name="restart_only", playbook=playbook, finding_types=["crash_loop"], priority=1000)
    incident = make_incident(cluster=sandbox_cluster)
    run = create_run(incident, rule, start=False)
    PlaybookRun.objects.filter(pk=run.pk).update(state="running")
    # The poll resolves the incident between the run's start and the step asking.
    Incident.objects.filter(pk=incident.pk).update(state="resolved", resolved_at=timezone.now())
    step = run.steps.get()
    StepRun.objects.filter(pk=step.pk).update(state="queued")
    execute_step(step.pk)
    run.refresh_from_db()
    step.refresh_from_db()
    assert (run.state, run.outcome) == ("finished", "cancelled")
    assert run.summary == f"cancelled: incident #{incident.pk} is no longer open"
    assert step.state == "cancelled" and step.output == f"not requested: incident #{incident.pk} is no longer open (resolved)"
    assert not Approval.objects.exists()
