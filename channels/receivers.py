"""Receivers of the lower layers' signals. Each writes outbox rows inside the sender's
transaction (so a rolled-back event tells nobody) and delivery is enqueued on commit.

Routing: a ChannelTarget takes an event when it is enabled, its platform is configured, and
its cluster / namespace / minimum-severity filters accept the event. Dedupe keys make every
receiver safe to run twice for the same event (a redelivered task re-sending its signal).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import structlog

from channels import messages, quieting, storm, threads
from channels.models import ChannelTarget, Kind, MessageState, Operation, OutboundMessage
from channels.services import queue_message
from channels.transport import is_enabled

log = structlog.get_logger(__name__)


def enabled_targets(*, approvals: bool = False) -> list[ChannelTarget]:
    """The enabled targets with their clusters (two queries), to match against many namespaces."""
    queryset = ChannelTarget.objects.filter(enabled=True).prefetch_related("clusters")
    if approvals:
        queryset = queryset.filter(approvals=True)
    return list(queryset)


def targets_for(*, cluster_id: int | None, namespace: str, severity: str | None, approvals: bool = False,
                among: list[ChannelTarget] | None = None) -> list[ChannelTarget]:
    """The targets a message about this cluster, namespace and severity goes to (`among`: from
    `enabled_targets()`, read once by a caller that asks for many namespaces)."""
    found = []
    for target in enabled_targets(approvals=approvals) if among is None else among:
        if not target.accepts(cluster_id=cluster_id, namespace=namespace, severity=severity):
            continue
        if not is_enabled(target.kind):
            log.warning("channel_target_disabled", target=target.name, kind=target.kind,
                        reason="the platform's secrets are not configured")
            continue
        found.append(target)
    return found


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _incident_targets(incident: Any, severity: str | None = None) -> list[ChannelTarget]:
    if incident is None:
        return targets_for(cluster_id=None, namespace="", severity=severity)
    return targets_for(cluster_id=incident.cluster_id, namespace=incident.namespace,
                       severity=severity or incident.severity)


def _fan_out(targets: list[ChannelTarget], text: str, key: str | None, *, incident_id: int | None = None,
             approval_id: int | None = None, buttons: bool = False, severity: str | None = None) -> None:
    hold_until = None
    if incident_id is not None and targets:
        quieted, hold_until = quieting.apply(incident_id, text, len(targets))  # silences, maintenance windows
        if quieted is None:
            return
        text = quieted
    for target in targets:
        if severity == "info" and target.digest:
            storm.hold_for_digest(target, text, incident_id)
            continue
        queue_message(
            kind=target.kind,
            address=target.address,
            text=text,
            target_id=target.pk,
            dedupe_key=f"{key}:{target.kind}:{target.address}"[:200] if key else None,
            incident_id=incident_id,
            approval_id=approval_id,
            with_buttons=buttons,
            not_before=hold_until,
        )


# --- playbooks ---------------------------------------------------------------------------------
def on_incident_opened(sender: Any, incident: Any, again: str = "", note: str = "", **kwargs: Any) -> None:
    # `again`: announced a second time (its silence ended), under a dedupe key of its own, and
    # not counted again as an opening by the storm control.
    # A non-critical incident with no parent gets no message of its own during a storm: counted
    # as held back by the storm's own write.
    hold = not incident.parent_id and incident.severity != "critical"
    current = storm.note_opened(incident, hold_back=hold) if not again else None
    if incident.parent_id:
        return  # folded into its parent's message (channels.threads, on incident_correlated)
    if current is not None and hold:
        return
    text = messages.incident_opened(incident)
    _fan_out(_incident_targets(incident), f"{note}\n{text}" if note else text,
             f"incident_opened:{incident.pk}" + (f":{again}" if again else ""), incident_id=incident.pk,
             severity=incident.severity)


def on_incident_resolved(sender: Any, incident: Any, **kwargs: Any) -> None:
    if incident.parent_id or storm.was_held_back(incident):
        return  # a child's recovery shows in its parent's message (on_incidents_ingested)
    _fan_out(_incident_targets(incident), messages.incident_resolved(incident), f"incident_resolved:{incident.pk}",
             incident_id=incident.pk, severity=incident.severity)


def on_incidents_ingested(sender: Any, cluster_id: int | None = None, opened: list[int] | None = None,
                          resolved: list[int] | None = None, linked: list[int] | None = None, **kwargs: Any) -> None:
    """Once per ingest: the parents whose children changed and the storms that grew say so, once."""
    threads.refresh_families([*(opened or []), *(resolved or []), *(linked or [])])
    storm.refresh_summaries(opened or [])


def on_rca_ready(sender: Any, incident: Any, report: dict[str, Any], run: Any = None, **kwargs: Any) -> None:
    _fan_out(_incident_targets(incident), messages.rca_ready(incident, report or {}),
             f"rca:{incident.pk}:{_digest(report)}", incident_id=incident.pk)


def on_notification_requested(sender: Any, text: str, severity: str = "warning", incident: Any = None, run: Any = None,
                              **kwargs: Any) -> None:
    key = f"notify:{run.pk}:{_digest(text)}" if run is not None else None
    _fan_out(_incident_targets(incident, severity or "warning"), text, key,
             incident_id=incident.pk if incident is not None else None, severity=severity or "warning")


def on_run_finished(sender: Any, run: Any, **kwargs: Any) -> None:
    incident = getattr(run, "incident", None)
    _fan_out(_incident_targets(incident), messages.run_finished(run), f"run_finished:{run.pk}",
             incident_id=incident.pk if incident is not None else None)


# --- agents ------------------------------------------------------------------------------------
def _approval_cluster_id(approval: Any) -> int | None:
    from k8s.models import Cluster

    name = (approval.arguments or {}).get("cluster")
    queryset = Cluster.objects.filter(name=name) if name else Cluster.objects.filter(is_default=True)
    return queryset.values_list("pk", flat=True).first()


def on_approval_requested(sender: Any, approval: Any, **kwargs: Any) -> None:
    targets = targets_for(cluster_id=_approval_cluster_id(approval),
                          namespace=str((approval.arguments or {}).get("namespace") or ""), severity=None,
                          approvals=True)
    _fan_out(targets, messages.approval_request(approval), f"approval:{approval.pk}", approval_id=approval.pk,
             buttons=True)


def on_approval_decided(sender: Any, approval: Any, **kwargs: Any) -> None:
    """Edit every button message of this approval: the outcome, who decided, no more buttons."""
    sent = OutboundMessage.objects.filter(
        approval_id=approval.pk, operation=Operation.SEND, payload__buttons=True
    ).exclude(state=MessageState.FAILED)
    text = messages.approval_decided(approval)
    for message in sent:
        queue_message(
            kind=message.kind,
            address=message.address,
            text=text,
            operation=Operation.EDIT,
            edit_of=message,
            approval_id=approval.pk,
            dedupe_key=f"approval_edit:{approval.pk}:{message.pk}:{approval.state}",
        )
    log.info("approval_messages_edited", approval=approval.pk, state=approval.state, messages=len(sent))


def on_tool_call_finished(sender: Any, audit: Any, ok: bool, output: str = "", approval: Any = None,
                          **kwargs: Any) -> None:
    """An approved change was carried out: say so where it was asked for and where it was approved."""
    if approval is None:
        return  # reads are answered by the command that ran them, not announced
    places: set[tuple[str, str]] = set(
        OutboundMessage.objects.filter(approval_id=approval.pk, operation=Operation.SEND, payload__buttons=True)
        .values_list("kind", "address")
    )
    kind, _, conversation = (approval.origin_ref or "").partition(":")
    if approval.origin == "chat" and kind in Kind.values and conversation:
        places.add((kind, conversation))
    text = messages.tool_finished(approval, ok, output)
    for kind_, address in sorted(places):
        queue_message(kind=kind_, address=address, text=text, approval_id=approval.pk,
                      dedupe_key=f"tool_finished:{approval.pk}:{kind_}:{address}"[:200])


def on_answer_ready(sender: Any, question: Any, reply: Any, answer: Any, **kwargs: Any) -> None:
    """The assistant answered a chat question: reply where it was asked, with buttons for any
    change it proposed (those approvals also went to the approval targets)."""
    context = getattr(question, "reply_to", None) or {}
    kind, address = context.get("kind"), context.get("address")
    if kind not in Kind.values or not address:
        return  # asked outside chat (an API call): nothing to deliver
    conversation = context.get("conversation") or address
    queue_message(kind=kind, address=address, text=answer.text or "(no answer)", reply_to=context.get("reply_to", ""),
                  dedupe_key=f"answer:{reply.pk}")
    from agents.models import Approval

    for approval in Approval.objects.filter(pk__in=list(answer.approval_ids or [])):
        queue_message(kind=kind, address=conversation, text=messages.approval_request(approval),
                      approval_id=approval.pk, with_buttons=True,
                      dedupe_key=f"approval:{approval.pk}:{kind}:{conversation}"[:200])


def connect() -> None:
    from agents import signals as agent_signals
    from playbooks import signals as playbook_signals

    pairs = [
        (playbook_signals.incident_opened, on_incident_opened),
        (playbook_signals.incident_resolved, on_incident_resolved),
        (playbook_signals.incidents_ingested, on_incidents_ingested),
        (playbook_signals.rca_ready, on_rca_ready),
        (playbook_signals.notification_requested, on_notification_requested),
        (playbook_signals.run_finished, on_run_finished),
        (agent_signals.approval_requested, on_approval_requested),
        (agent_signals.approval_decided, on_approval_decided),
        (agent_signals.tool_call_finished, on_tool_call_finished),
    ]
    answer_ready = getattr(agent_signals, "answer_ready", None)
    if answer_ready is not None:
        pairs.append((answer_ready, on_answer_ready))
    for signal, receiver in pairs:
        signal.connect(receiver, dispatch_uid=f"channels.{receiver.__name__}")
