"""Signals the agents app sends; upper layers (playbooks, channels) receive them.

Receivers run inside the sender's transaction, so what they write (outbox rows, a resumed
run) commits or rolls back with the event that caused it.
"""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: approval (agents.Approval)
approval_requested = Signal()
# kwargs: approval (agents.Approval) -- its state is approved, rejected or expired
approval_decided = Signal()
# kwargs: approval (agents.Approval | None), audit (agents.AuditEntry), ok (bool), output (str)
tool_call_finished = Signal()
# kwargs: question (agents.Message, the person's, with its reply_to), reply (agents.Message),
# answer (agents.conversations.Answer) -- sent by the agents.answer_message task, in the
# transaction that stores the reply.
answer_ready = Signal()
