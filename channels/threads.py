"""One message per incident family: a correlated child's news folds into its parent's message.

When correlation links incidents to their parent, or children resolve, the parent's "incident
opened" message is rewritten, once per ingest (`incidents_ingested`), to say how many workloads are affected. A
message that has not left the outbox yet is rewritten in place (one poll that opens a node's
incident and its 200 children sends one message per target); one already delivered is edited
on its platform (Telegram editMessageText, Slack chat.update, Discord PATCH, the console), and
edits that pile up while the platform is slow collapse into the newest queued one.
"""

from __future__ import annotations

from typing import Any

import structlog

from channels import messages, metrics
from channels.models import MessageState, Operation, OutboundMessage
from channels.services import queue_message

log = structlog.get_logger(__name__)

CHILDREN_LISTED = 10


def revise_message(original: OutboundMessage, text: str) -> str:
    """Make a sent (or queued) message say `text`: rewrite it while queued, else edit it.

    Conditional UPDATEs on state=queued: a worker's claim (queued -> sending) and ours exclude
    each other, so a rewrite either lands before the send or becomes an edit after it.
    """
    if original.text == text:
        return "same"
    if OutboundMessage.objects.filter(pk=original.pk, state=MessageState.QUEUED, parts_sent=0).update(text=text):
        original.text = text
        return "rewritten"
    pending = (OutboundMessage.objects.filter(edit_of=original, operation=Operation.EDIT, state=MessageState.QUEUED)
               .order_by("-pk").values_list("pk", flat=True).first())
    if pending is not None and OutboundMessage.objects.filter(pk=pending, state=MessageState.QUEUED).update(text=text):
        return "edit_rewritten"
    if original.state == MessageState.FAILED:
        return "failed"
    queue_message(kind=original.kind, address=original.address, text=text, operation=Operation.EDIT, edit_of=original,
                  incident_id=original.incident_id)
    return "edit_queued"


def family_text(parent: Any) -> str:
    """The parent's message: the incident, then the workloads its cause affects."""
    text = messages.incident_opened(parent)
    children = parent.children.all()
    total = children.count()
    if not total:
        return text
    still_open = children.filter(state="open").count()
    listed = list(children.order_by("namespace", "workload_name")[:CHILDREN_LISTED])
    namespaces = sorted(set(children.values_list("namespace", flat=True)))
    from playbooks.models import PlaybookRun

    waiting = PlaybookRun.objects.filter(incident_id=parent.pk).exclude(state=PlaybookRun.State.FINISHED).exists()
    return text + "\n" + messages.affected_workloads(total, still_open, listed, namespaces, waiting=waiting)


def refresh_parent(parent: Any) -> int:
    """Rewrite or edit every "incident opened" message of `parent`; returns how many changed."""
    sent = list(OutboundMessage.objects.filter(incident_id=parent.pk, operation=Operation.SEND,
                                               dedupe_key__startswith=f"incident_opened:{parent.pk}:"))
    if not sent:
        return 0
    text = family_text(parent)
    changed = 0
    for message in sent:
        outcome = revise_message(message, text)
        if outcome != "same":
            changed += 1
            metrics.FOLDED.labels(outcome).inc()
    log.info("incident_family_message_revised", incident=parent.pk, messages=changed)
    return changed


def refresh_families(incident_ids: list[int]) -> int:
    """The parents of these incidents (children just opened, linked or resolved), each once."""
    from playbooks.models import Incident

    if not incident_ids:
        return 0
    parent_ids = set(Incident.objects.filter(pk__in=incident_ids, parent__isnull=False).values_list("parent_id", flat=True))
    changed = 0
    for parent in Incident.objects.filter(pk__in=parent_ids).select_related("cluster").order_by("pk"):
        changed += refresh_parent(parent)
    return changed
