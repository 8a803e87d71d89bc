"""The outbox: writing messages in the caller's transaction, and delivering one message.

`queue_message` is called from signal receivers and the router, inside whatever transaction
caused the message, and enqueues delivery on commit (a rolled-back event sends nothing).
`deliver` is the whole of the `channels.deliver_message` task: it claims the row with a
conditional UPDATE (so a redelivered task, or two workers, deliver it once), sends it, and
either records the platform's message id or schedules the next attempt.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from channels import metrics
from channels.models import MessageState, Operation, OutboundMessage
from channels.transport import Button, TransportError, approval_buttons, get_transport

log = structlog.get_logger(__name__)


def queue_message(
    *,
    kind: str,
    address: str,
    text: str,
    target_id: int | None = None,
    dedupe_key: str | None = None,
    approval_id: int | None = None,
    with_buttons: bool = False,
    incident_id: int | None = None,
    reply_to: str = "",
    operation: str = Operation.SEND,
    edit_of: OutboundMessage | None = None,
    callback_id: str = "",
    alert: bool = False,
    not_before: Any = None,
) -> OutboundMessage | None:
    """Write one outbox row and deliver it after commit; None when `dedupe_key` was already used.
    `not_before` holds it until then (a maintenance window that holds notifications)."""
    payload: dict[str, Any] = {}
    if with_buttons:
        payload["buttons"] = True
    if reply_to:
        payload["reply_to"] = reply_to
    if callback_id:
        payload["callback_id"] = callback_id
        payload["alert"] = alert
    try:
        # A savepoint, so a duplicate key leaves the caller's transaction usable.
        with transaction.atomic():
            message = OutboundMessage.objects.create(
                kind=kind,
                address=address,
                text=text,
                target_id=target_id,
                dedupe_key=dedupe_key,
                approval_id=approval_id,
                incident_id=incident_id,
                operation=operation,
                edit_of=edit_of,
                payload=payload,
                **({"next_attempt_at": not_before} if not_before is not None else {}),
            )
    except IntegrityError:
        if dedupe_key and OutboundMessage.objects.filter(dedupe_key=dedupe_key).exists():
            log.info("outbox_duplicate_skipped", dedupe_key=dedupe_key)
            return None
        raise
    log.info("outbox_queued", message_id=message.pk, kind=kind, operation=operation, approval_id=approval_id)
    wait = (not_before - timezone.now()).total_seconds() if not_before is not None else 0.0
    _enqueue_on_commit(message.pk, countdown=wait if wait > 0 else None)
    return message


def _enqueue_on_commit(message_id: int, countdown: float | None = None) -> None:
    from channels.tasks import deliver_message

    def send() -> None:
        deliver_message.apply_async((message_id,), countdown=countdown)

    transaction.on_commit(send)


def _buttons_for(message: OutboundMessage) -> list[Button]:
    if message.payload.get("buttons") and message.approval_id:
        return approval_buttons(message.approval_id)
    return []


def deliver(message_id: int) -> str:
    """Deliver one outbox row; returns what happened (for logs and tests)."""
    now = timezone.now()
    claimed = OutboundMessage.objects.filter(
        pk=message_id, state=MessageState.QUEUED, next_attempt_at__lte=now
    ).update(state=MessageState.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    if not claimed:
        return _not_claimed(message_id, now)
    message = OutboundMessage.objects.select_related("edit_of").get(pk=message_id)
    bound = log.bind(message_id=message.pk, kind=message.kind, operation=message.operation, attempt=message.attempts)
    try:
        transport = get_transport(message.kind)
        if message.operation == Operation.SEND:

            def record_part(index: int, platform_id: str) -> None:
                # The last part carries the buttons, so its id is the one later edits need.
                OutboundMessage.objects.filter(pk=message.pk).update(parts_sent=index + 1, platform_message_id=platform_id)

            parts = transport.split(message.text)
            transport.send(
                message.address,
                parts,
                buttons=_buttons_for(message),
                reply_to=str(message.payload.get("reply_to") or ""),
                start=min(message.parts_sent, len(parts)),
                on_part=record_part,
            )
        elif message.operation == Operation.EDIT:
            original = message.edit_of
            if original is None:
                raise TransportError("the message to edit is gone", permanent=True)
            if original.state == MessageState.FAILED:
                raise TransportError("the message to edit was never delivered", permanent=True)
            if original.state != MessageState.DELIVERED or not original.platform_message_id:
                # Back off like an outage: the original may itself be waiting out a 429.
                raise TransportError("the message to edit is not delivered yet")
            transport.edit(original.address, original.platform_message_id, message.text, buttons=_buttons_for(message))
        else:
            transport.answer_callback(
                str(message.payload.get("callback_id") or ""), message.text, alert=bool(message.payload.get("alert"))
            )
    except TransportError as exc:
        return _failed(message, exc, bound)
    except Exception as exc:  # a bug or an unexpected library error: retry, never leave the row claimed
        bound.exception("outbox_delivery_crashed")
        return _failed(message, TransportError(f"{type(exc).__name__}: {exc}"), bound)
    delivered_at = timezone.now()
    OutboundMessage.objects.filter(pk=message.pk, state=MessageState.SENDING).update(
        state=MessageState.DELIVERED, delivered_at=delivered_at, last_error=""
    )
    metrics.MESSAGES_SENT.labels(message.kind, message.operation).inc()
    metrics.DELIVERY_LATENCY.labels(message.kind).observe((delivered_at - message.created_at).total_seconds())
    bound.info("outbox_delivered")
    return "delivered"


def _not_claimed(message_id: int, now: Any) -> str:
    row = OutboundMessage.objects.filter(pk=message_id).values("state", "next_attempt_at").first()
    if row is None:
        log.info("outbox_message_missing", message_id=message_id)
        return "missing"
    if row["state"] == MessageState.QUEUED and row["next_attempt_at"] > now:
        # A countdown that fired a little early (or a stray duplicate): come back when due.
        wait = (row["next_attempt_at"] - now).total_seconds()
        from channels.tasks import deliver_message

        deliver_message.apply_async((message_id,), countdown=wait)
        return "not_due"
    log.info("outbox_already_claimed", message_id=message_id, state=row["state"])
    return f"skipped:{row['state']}"


def _failed(message: OutboundMessage, exc: TransportError, bound: Any) -> str:
    if exc.permanent or message.attempts >= settings.AIOPS_CHAT_MAX_ATTEMPTS:
        OutboundMessage.objects.filter(pk=message.pk).update(state=MessageState.FAILED, last_error=exc.message[:2000])
        reason = "permanent" if exc.permanent else "attempts_exhausted"
        metrics.MESSAGES_FAILED.labels(message.kind, reason).inc()
        bound.warning("outbox_delivery_failed", error=exc.message, reason=reason)
        return "failed"
    if exc.retry_after is not None:
        delay = max(exc.retry_after, 0.0)
        cause = "rate_limited"
    else:
        # Exponential back-off with jitter, so a platform outage is not hammered in lockstep.
        delay = min(settings.AIOPS_CHAT_RETRY_BASE * 2 ** (message.attempts - 1), settings.AIOPS_CHAT_RETRY_MAX)
        delay *= random.uniform(0.8, 1.2)
        cause = "unavailable"
    OutboundMessage.objects.filter(pk=message.pk).update(
        state=MessageState.QUEUED, next_attempt_at=timezone.now() + timedelta(seconds=delay), last_error=exc.message[:2000]
    )
    metrics.DELIVERY_RETRIES.labels(message.kind, cause).inc()
    bound.info("outbox_delivery_retry", error=exc.message, delay_s=round(delay, 3), cause=cause)
    from channels.tasks import deliver_message

    deliver_message.apply_async((message.pk,), countdown=delay)
    return "retry"


def requeue_stalled(*, quiet_for: float = 60.0) -> int:
    """Re-enqueue rows whose task was lost: queued and overdue, or claimed by a worker that died.

    A worker killed between sending and recording the result leaves its row 'sending'; putting
    it back makes delivery at-least-once in that one crash case rather than never.
    """
    now = timezone.now()
    overdue = list(
        OutboundMessage.objects.filter(
            state=MessageState.QUEUED, next_attempt_at__lt=now - timedelta(seconds=quiet_for)
        ).values_list("pk", flat=True)[:500]
    )
    stale = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + quiet_for)
    abandoned = list(
        OutboundMessage.objects.filter(state=MessageState.SENDING, claimed_at__lt=stale).values_list("pk", flat=True)[:500]
    )
    if abandoned:
        OutboundMessage.objects.filter(pk__in=abandoned, state=MessageState.SENDING, claimed_at__lt=stale).update(
            state=MessageState.QUEUED, next_attempt_at=now
        )
    from channels.tasks import deliver_message

    for pk in overdue + abandoned:
        deliver_message.delay(pk)
    if overdue or abandoned:
        log.warning("outbox_requeued", overdue=len(overdue), abandoned=len(abandoned))
    return len(overdue) + len(abandoned)
