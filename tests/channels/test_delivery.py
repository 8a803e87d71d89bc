"""Outbound delivery through the outbox: retries, give-up, splitting, exactly-once."""

from __future__ import annotations

import time

import pytest
from django.db import transaction
from prometheus_client import REGISTRY

from channels import services
from channels.models import MessageState, OutboundMessage
from channels.telegram import formatting as tg_format
from tests.conftest import wait_for


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _queue(kind: str, address: str, text: str, **kwargs):  # type: ignore[no-untyped-def]
    with transaction.atomic():
        return services.queue_message(kind=kind, address=address, text=text, **kwargs)


@pytest.mark.integration
def test_it_waits_out_telegram_flood_control_then_delivers_once(chat, celery_worker, transactional_db) -> None:  # type: ignore[no-untyped-def]
    chat.telegram.script_flood("sendMessage", retry_after=1)
    message = _queue("telegram", "-1001234", "pod **web-1** restarted")

    wait_for(lambda: OutboundMessage.objects.get(pk=message.pk).state == MessageState.DELIVERED,
             timeout=15, message="the message to be delivered after the flood wait")
    calls = chat.telegram.calls("sendMessage")
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 0.95  # Telegram said: retry after 1 second
    delivered = OutboundMessage.objects.get(pk=message.pk)
    assert delivered.attempts == 2
    assert delivered.platform_message_id == str(chat.telegram.chat_messages("-1001234")[0]["message_id"])
    assert chat.telegram.chat_messages("-1001234")[0]["text"] == "pod <b>web-1</b> restarted"

    # The task redelivered (a worker crash after sending, a duplicate enqueue): nothing is resent.
    from channels.tasks import deliver_message

    deliver_message.delay(message.pk).forget()
    assert services.deliver(message.pk) == "skipped:delivered"
    time.sleep(0.5)
    assert len(chat.telegram.calls("sendMessage", succeeded=True)) == 1


@pytest.mark.django_db
def test_it_backs_off_on_server_errors_and_gives_up_after_the_bound(chat, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_CHAT_MAX_ATTEMPTS = 3
    chat.slack.script("chat.postMessage", 503, {"ok": False, "error": "service_unavailable"}, times=3)
    message = _queue("slack", "C0ALERTS", "hello")
    retries_before = _metric("aiops_chat_delivery_retries_total", platform="slack", cause="unavailable")
    failed_before = _metric("aiops_chat_messages_failed_total", platform="slack", reason="attempts_exhausted")
    outcomes = []
    for _ in range(3):
        OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=message.created_at)  # due now
        outcomes.append(services.deliver(message.pk))
    message.refresh_from_db()
    assert outcomes == ["retry", "retry", "failed"]
    assert _metric("aiops_chat_delivery_retries_total", platform="slack", cause="unavailable") == retries_before + 2
    assert _metric("aiops_chat_messages_failed_total", platform="slack", reason="attempts_exhausted") == failed_before + 1
    assert message.state == MessageState.FAILED
    assert message.attempts == 3
    assert "HTTP 503" in message.last_error
    assert len(chat.slack.calls("chat.postMessage")) == 3


@pytest.mark.django_db
def test_a_permanent_error_is_not_retried(chat) -> None:  # type: ignore[no-untyped-def]
    chat.slack.script("chat.postMessage", 200, {"ok": False, "error": "channel_not_found"})
    message = _queue("slack", "C0NOWHERE", "hello")
    failed_before = _metric("aiops_chat_messages_failed_total", platform="slack", reason="permanent")
    assert services.deliver(message.pk) == "failed"
    assert _metric("aiops_chat_messages_failed_total", platform="slack", reason="permanent") == failed_before + 1
    message.refresh_from_db()
    assert (message.state, message.attempts) == (MessageState.FAILED, 1)
    assert "channel_not_found" in message.last_error


@pytest.mark.django_db
def test_a_discord_rate_limit_reschedules_after_its_retry_after(chat) -> None:  # type: ignore[no-untyped-def]
    chat.discord.script_ratelimit("create_message", retry_after=2.5)
    message = _queue("discord", "123456789012345678", "hello")
    retries_before = _metric("aiops_chat_delivery_retries_total", platform="discord", cause="rate_limited")
    assert services.deliver(message.pk) == "retry"
    assert _metric("aiops_chat_delivery_retries_total", platform="discord", cause="rate_limited") == retries_before + 1
    message.refresh_from_db()
    assert message.state == MessageState.QUEUED
    wait = (message.next_attempt_at - message.created_at).total_seconds()
    assert 2.4 <= wait <= 4
    assert services.deliver(message.pk) == "not_due"  # too early: nothing is sent
    assert len(chat.discord.calls("create_message")) == 1


@pytest.mark.django_db
def test_a_long_log_is_split_at_the_limit_without_breaking_its_code_block(chat) -> None:  # type: ignore[no-untyped-def]
    log_lines = "\n".join(f"2026-11-23T10:00:{i % 60:02d}Z ERROR <conn #{i}> refused & retrying" for i in range(400))
    message = _queue("telegram", "-1001234", f"**Logs of web-1**\n```text\n{log_lines}\n```")
    latencies_before = _metric("aiops_chat_delivery_seconds_count", platform="telegram")
    assert services.deliver(message.pk) == "delivered"
    assert _metric("aiops_chat_delivery_seconds_count", platform="telegram") == latencies_before + 1  # one message, however many parts
    sent = chat.telegram.chat_messages("-1001234")
    assert len(sent) >= 5
    for part in sent:
        assert len(part["text"]) <= tg_format.LIMIT
        assert part["text"].count("<pre>") == part["text"].count("</pre>") == 1
    received = "\n".join(p["text"] for p in sent)
    assert received.count("&lt;conn #") == 400  # every line arrived, escaped
    message.refresh_from_db()
    assert message.parts_sent == len(sent)
    assert message.platform_message_id == str(sent[-1]["message_id"])


@pytest.mark.django_db
def test_a_retried_split_message_resumes_after_the_parts_already_sent(chat) -> None:  # type: ignore[no-untyped-def]
    text = "\n\n".join(f"paragraph {i} " + "x" * 1500 for i in range(6))  # several Discord parts
    message = _queue("discord", "123456789012345678", text)
    # Let two parts through, then fail the third with a 502.
    original = chat.discord._create
    count = {"n": 0}

    def flaky(channel, body):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] == 3:
            return 502, {"message": "Bad Gateway"}
        return original(channel, body)

    chat.discord._create = flaky
    try:
        assert services.deliver(message.pk) == "retry"
        OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=message.created_at)
        assert services.deliver(message.pk) == "delivered"
    finally:
        chat.discord._create = original
    contents = [m["content"] for m in chat.discord.channel_messages("123456789012345678")]
    assert len(contents) == len(set(contents))  # no part twice
    assert sum(c.count("paragraph") for c in contents) == 6


@pytest.mark.django_db
def test_lost_and_abandoned_deliveries_are_requeued(chat, settings) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from django.utils import timezone

    lost = _queue("slack", "C0ALERTS", "lost in a broker restart")
    abandoned = _queue("slack", "C0ALERTS", "its worker was killed mid-send")
    fresh = _queue("slack", "C0ALERTS", "just queued")
    long_ago = timezone.now() - timedelta(minutes=10)
    OutboundMessage.objects.filter(pk=lost.pk).update(next_attempt_at=long_ago)
    OutboundMessage.objects.filter(pk=abandoned.pk).update(state=MessageState.SENDING, claimed_at=long_ago)
    assert services.requeue_stalled() == 2
    assert OutboundMessage.objects.get(pk=abandoned.pk).state == MessageState.QUEUED
    # Delivering them now works as for any queued row; the fresh one was left alone.
    assert services.deliver(lost.pk) == "delivered" and services.deliver(abandoned.pk) == "delivered"
    assert OutboundMessage.objects.get(pk=fresh.pk).attempts == 0
