"""Celery tasks of the channels app: thin, idempotent, taking ids (names are stable API)."""

from __future__ import annotations

from celery import shared_task

from channels import services


@shared_task(name="channels.deliver_message", ignore_result=True)
def deliver_message(message_id: int) -> str:
    # Idempotent: services.deliver claims the row with a conditional UPDATE, so a redelivered
    # message (acks_late after a crash) or a duplicate enqueue sends nothing twice.
    return services.deliver(message_id)


@shared_task(name="channels.requeue_stalled_messages", ignore_result=True, expires=50)
def requeue_stalled_messages() -> int:
    return services.requeue_stalled()


@shared_task(name="channels.run_chat_tool", ignore_result=True)
def run_chat_tool(update_id: int, tool: str, args: dict[str, object]) -> str:
    from channels.commands import run_read_tool

    return run_read_tool(update_id, tool, dict(args))


@shared_task(name="channels.send_digests", ignore_result=True)
def send_digests() -> int:
    # Idempotent: entries are claimed under their target's row lock and marked with the message.
    from channels.storm import send_digests as send

    return send()
