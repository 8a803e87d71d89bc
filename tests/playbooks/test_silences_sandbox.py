"""Silences and maintenance windows end to end on the sandbox, with the engine's real worker, our
MCP server and the chat fakes: a silence quiets a fault's messages and run and the run starts when
it ends while the fault persists; a maintenance window holds a HIGH step until it ends."""

from __future__ import annotations

import time
from datetime import UTC, timedelta
from typing import Any

import pytest
from django.utils import timezone

from agents.models import Approval
from channels.models import ChannelTarget, Identity, MessageState, OutboundMessage
from playbooks.models import ClusterEvent, Incident, MaintenanceWindow, PlaybookRun, Rule, StepRun
from playbooks.services.poll import poll
from tests.channels import platforms
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration]

TG_CHAT, SLACK_CHANNEL, DISCORD_CHANNEL = "-1001234", "C0OPS", "700000000000000001"
CHAT_KINDS = ("telegram", "slack", "discord")


@pytest.fixture
def shop_chat(engine, chat):  # type: ignore[no-untyped-def]
    for name, kind, address in (("tg", "telegram", TG_CHAT), ("slack", "slack", SLACK_CHANNEL),
                                ("discord", "discord", DISCORD_CHANNEL)):
        ChannelTarget.objects.create(name=name, kind=kind, address=address, namespace_regex="shop")
    Identity.objects.create(platform="telegram", platform_user_id="5001", user=engine.approvers.alice)
    return engine


def _crash_cart(engine: Any) -> None:
    engine.sandbox.fault("crash_loop", "shop/cart")  # every pod; a Go panic: the RCA allows a restart
    engine.sandbox.clear("payments/ledger")
    engine.sandbox.clear("data/report-builder")
    engine.sandbox.clear("node-4")
    engine.sandbox.tick(2)


def _about(incident: Incident) -> Any:
    return OutboundMessage.objects.filter(incident_id=incident.pk)


@pytest.mark.django_db(transaction=True)
def test_a_silence_quiets_a_faults_messages_and_run_and_the_run_starts_when_it_ends_while_the_fault_persists(
    shop_chat, chat, client  # type: ignore[no-untyped-def]
) -> None:
    engine = shop_chat
    Rule.objects.exclude(name="crash_loop").update(enabled=False)
    # alice silences the cart from Telegram, as people do before planned work.
    platforms.telegram_message(client, "/silence shop/cart 30m upgrading the cart's database", user_id=5001,
                               chat_id=int(TG_CHAT))
    # The reply is written for Telegram (delivered from the outbound queue, which the engine's worker
    # does not consume for this process).
    reply = OutboundMessage.objects.get(kind="telegram", text__contains="Silence #")
    assert 'namespace="shop", workload="cart"' in reply.text and "until" in reply.text
    from playbooks.models import Silence

    silence = Silence.objects.get()
    # Shortened to a few seconds, so the test need not wait half an hour: its end is exact all the
    # same (the task queued for the end finds it early and the end comes from the sweep's clock).
    ends_at = timezone.now() + timedelta(seconds=25)
    Silence.objects.filter(pk=silence.pk).update(ends_at=ends_at)
    from playbooks.tasks_quiet import end_silence_task

    end_silence_task.apply_async((silence.pk,), eta=ends_at)

    _crash_cart(engine)
    poll(engine.cluster)
    incident = Incident.objects.get(workload_name="cart", state="open")
    assert incident.silenced_by_id == silence.pk
    assert incident.no_run_reason["code"] == "silenced"
    assert ClusterEvent.objects.filter(incident=incident, kind="silenced").exists()
    # The fault persists through more polls: still nothing is sent and nothing runs.
    for _ in range(2):
        engine.sandbox.tick()
        poll(engine.cluster)
    time.sleep(1)
    assert not _about(incident).exists()
    assert not PlaybookRun.objects.filter(incident=incident).exists()
    assert not Approval.objects.exists()

    # The silence ends while the cart still crash-loops: every target hears of it, and the rule
    # runs as if the incident had just opened, up to its restart approval.
    wait_for(lambda: Incident.objects.get(pk=incident.pk).silenced_by_id is None, timeout=90,
             message="the silence to end and release the incident")
    run = wait_for(lambda: PlaybookRun.objects.filter(incident=incident).first(), timeout=30,
                   message="the rule's run after the silence")
    assert run.created_at >= ends_at and run.rule.name == "crash_loop"
    wait_for(lambda: _about(incident).filter(kind__in=CHAT_KINDS, state=MessageState.DELIVERED,
                                             dedupe_key__startswith=f"incident_opened:{incident.pk}:silence-").count()
             == 3, timeout=60, message="the incident on all three platforms after the silence")
    assert any(f"Silence #{silence.pk} ended and this is still failing" in m["text"]
               for m in chat.telegram.chat_messages(TG_CHAT))
    waiting = wait_for(lambda: StepRun.objects.filter(run=run, state="waiting_approval").first(), timeout=90,
                       message="the run to ask for its restart")
    assert waiting.tool == "restart_workload"
    assert ClusterEvent.objects.filter(incident=incident, kind="silence_ended").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_maintenance_window_holds_a_high_step_until_it_ends(shop_chat, chat) -> None:  # type: ignore[no-untyped-def]
    from playbooks.models import Playbook, Step

    engine = shop_chat
    Rule.objects.update(enabled=False)
    playbook = Playbook.objects.create(name="roll_back")
    Step.objects.create(playbook=playbook, order=1, name="roll back", kind="tool", tool="rollback_deployment",
                        args={"namespace": "{{ namespace }}", "name": "{{ deployment }}"})
    Rule.objects.create(name="roll_back_crashes", playbook=playbook, finding_types=["crash_loop"], priority=1000)
    # A window over the shop namespace that started this minute and ends at a minute's boundary
    # 25 to 85 seconds from now (cron's granularity is the minute).
    now = timezone.now().astimezone(UTC)
    minutes = 1 if now.second < 35 else 2
    window = MaintenanceWindow.objects.create(
        name="shop upgrade", cluster=engine.cluster, namespace="shop", schedule=f"{now.minute} {now.hour} * * *",
        duration_minutes=minutes, time_zone="UTC", reason="database upgrade")
    ends = now.replace(second=0, microsecond=0) + timedelta(minutes=minutes)

    _crash_cart(engine)
    poll(engine.cluster)
    incident = Incident.objects.get(workload_name="cart", state="open")
    held = wait_for(lambda: StepRun.objects.filter(run__incident=incident, tool="rollback_deployment",
                                                   not_before__isnull=False).first(),
                    timeout=60, message="the HIGH step to be held by the window")
    assert held.not_before == ends and held.state == "queued" and held.risk == "HIGH"
    assert "maintenance window shop upgrade" in held.output
    incident.refresh_from_db()
    assert incident.no_run_reason["code"] == "maintenance"
    assert ClusterEvent.objects.filter(incident=incident, kind="maintenance").count() == 1
    # Notifications during the window say so.
    opened = wait_for(lambda: _about(incident).filter(kind="telegram").first(), message="the incident's message")
    assert opened.text.startswith("🔧 In maintenance window shop upgrade (namespace shop in cluster sandbox) until ")

    # Nothing is asked while the window lasts, however often the reconciler looks.
    from playbooks.engine import reconcile

    while timezone.now() < ends - timedelta(seconds=3):
        reconcile()
        assert not Approval.objects.exists()
        assert StepRun.objects.get(pk=held.pk).state == "queued"
        time.sleep(2)
    step = wait_for(lambda: StepRun.objects.filter(pk=held.pk, state="waiting_approval").first(), timeout=60,
                    message="the HIGH step to ask for its approval once the window ended")
    assert step.approval.requested_at >= ends and step.approval.tool == "rollback_deployment"
    assert step.not_before is None
    assert Incident.objects.get(pk=incident.pk).no_run_reason is None
    window.delete()
