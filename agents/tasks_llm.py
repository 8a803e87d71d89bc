"""Celery tasks of the LLM room. Task names are a stable API."""

from __future__ import annotations

import structlog
from celery import shared_task
from django.conf import settings

from agents.llm import task_limits

log = structlog.get_logger(__name__)


# Limits from the LLM settings, not the global task limit: the answer ends by its own deadline
# (LLM_CHAT_TIME_LIMIT) with a message to the person; the soft limit above it is the last resort.
@shared_task(name="agents.answer_message", **task_limits(settings.LLM_CHAT_TIME_LIMIT))
def answer_message(message_id: int) -> dict[str, object] | None:
    """Answer a person's stored chat message (from `conversations.submit`).

    Idempotent: it claims the message (pending -> answering) with a conditional update, so a
    redelivered or duplicate message does nothing. The reply is stored as the question's
    `answer`, and `agents.signals.answer_ready` announces it (channels deliver it); the task's
    return value is the same answer, for callers that link a callback instead.
    """
    from agents.conversations import answer_question, claim
    from agents.models import Message

    question = claim(message_id)
    if question is None:
        log.info("chat_answer_skipped", message=message_id, reason="missing or already claimed")
        return None
    try:
        result = answer_question(question, notify=True)
    except Exception:
        # Not the LLM's failure (those become an answer): our bug or the database. Mark it so
        # it is visible rather than stuck in "answering", and let Celery record the error.
        Message.objects.filter(pk=message_id).update(state=Message.State.FAILED)
        raise
    return result.as_dict()
