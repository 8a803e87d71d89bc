"""What the incident page shows: one timeline of everything that happened to an incident
(newest first), the state of its pods, and the actions a person may take on it.

Each line has its time, its kind as an icon and a word (colour is never the only signal), a
one-line summary in plain words and, where there is one, a detail (a step's output, a message's
text) that the page shows collapsed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils.safestring import SafeString

from channels.formatting import (
    FINDING_WORDS,
    action_words,
    incident_workload,
    rca_report,
    shorten,
    strip_prefix,
    words,
)
from channels.messages import run_summary
from channels.models import ChannelTarget, Kind, Operation, OutboundMessage
from channels.web.formatting import to_html

EVENT_LOOK = {
    "detected": ("🔎", "Detected"),
    "recurred": ("🔁", "Recurred"),
    "changed": ("✏️", "Changed"),
    "resolved": ("✅", "Resolved"),
    "alert_fired": ("🔔", "Alert fired"),
    "alert_resolved": ("🔕", "Alert resolved"),
    "unreachable": ("📡", "Cluster unreachable"),
    "reachable": ("📡", "Cluster reachable"),
    "correlated": ("🔗", "Linked"),
    "silenced": ("🔕", "Silenced"),
    "silence_ended": ("🔔", "Silence ended"),
    "maintenance": ("🔧", "Maintenance"),
}
STEP_LOOK = {
    "check": ("🔍", "Check"),
    "action": ("🛠️", "Action"),
    "rca": ("🧠", "Root cause"),
    "notify": ("💬", "Message"),
    "verify": ("🩺", "Verification"),
    "handoff": ("🙋", "Handed off"),
}
STATE_WORDS = {
    "succeeded": "done",
    "failed": "failed",
    "skipped": "skipped",
    "rejected": "rejected",
    "expired": "expired",
    "cancelled": "cancelled",
    "running": "running",
    "queued": "queued",
    "waiting_approval": "waiting for an approval",
    "pending": "not started",
}
DECISION_LOOK = {
    "approved": ("👍", "Approved"),
    "rejected": ("👎", "Rejected"),
    "expired": ("⌛", "Expired"),
    "cancelled": ("🚫", "Cancelled"),
}
MUTATING = ("MEDIUM", "HIGH")


@dataclass
class Line:
    at: datetime
    icon: str
    word: str
    summary: str
    kind: str  # css class and data-kind: event, step, approval, message, run
    detail: str = ""  # plain text shown in a <pre>, collapsed
    detail_html: SafeString | None = None  # rendered neutral markup, collapsed
    detail_label: str = "Output"
    actor: str = ""
    approval: Any = None  # a pending approval: the line carries its buttons
    key: str = ""  # stable id (a finished step's expanded output survives a live update)
    order: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _event_lines(incident: Any) -> list[Line]:
    lines = []
    for event in incident.events.all():
        icon, word = EVENT_LOOK.get(event.kind, ("•", event.get_kind_display()))
        what = words(event.finding_type, FINDING_WORDS) if event.finding_type else event.alertname
        summary = event.message or what or word
        if event.kind == "recurred" and what:
            summary = f"{what}: {event.message}" if event.message else f"{what} seen again"
        lines.append(Line(event.created_at, icon, word, shorten(summary, 400), "event", key=f"event-{event.pk}",
                          order=event.pk))
    return lines


def _step_look(step: Any) -> tuple[str, str]:
    if step.kind == "tool":
        return STEP_LOOK["action" if step.risk in MUTATING else "check"]
    return STEP_LOOK.get(step.kind, ("•", step.get_kind_display()))


def _step_summary(step: Any, incident: Any) -> str:
    state = STATE_WORDS.get(step.state, step.state)
    if step.kind == "tool" and step.rendered_args is not None:
        what = action_words(step.tool, step.rendered_args)
    elif step.kind == "tool":
        # Never rendered (skipped, or not reached): its arguments are still templates such as
        # `{{ pod }}`, which are no words for people; the step's own name says what it would do.
        what = step.name.replace("_", " ").capitalize()
    else:
        what = step.name
    head = f"Step {step.order}, {what}: {state}"
    if step.kind == "verify" and step.output:
        head += " — " + strip_prefix(step.output, incident.workload_key, incident_workload(incident))
    elif step.kind == "rca" and step.state == "succeeded":
        report = rca_report(step.data)
        if report is not None:
            head += f" — {report.class_words}: {report.root_cause}"
    elif step.state == "skipped" and step.output:
        head += f" ({step.output})"
    return shorten(head, 400)


def _run_lines(incident: Any, viewer: Any) -> tuple[list[Line], list[Any]]:
    from agents.approvals import can_decide

    lines: list[Line] = []
    approvals = []
    for run in incident.runs.all():
        rule = f" (rule {run.rule.name})" if run.rule_id and run.rule else ""
        if run.state == "proposed":
            lines.append(Line(run.created_at, "📋", "Proposed", f"Playbook {run.playbook_name}{rule} waits for a "
                              "person to start it", "run", order=run.pk, extra={"run": run}))
        else:
            lines.append(Line(run.started_at or run.created_at, "📋", "Playbook",
                              f"Playbook {run.playbook_name} started{rule}" + (" as a dry run" if run.dry_run else ""),
                              "run", order=run.pk))
        for step in run.steps.all():
            if step.approval_id:
                approval = step.approval
                approvals.append(approval)
                pending = approval.state == "pending"
                lines.append(Line(
                    approval.requested_at, "🔐", "Approval requested",
                    f"{action_words(approval.tool, approval.arguments)} ({approval.risk} risk), code {approval.code}",
                    "approval", detail=approval.reason, detail_label="Why", key=f"approval-{approval.pk}",
                    order=approval.pk,
                    approval=approval if pending and can_decide(viewer, approval) else None,
                    extra={"waiting": pending},
                ))
                if not pending and approval.decided_at:
                    icon, word = DECISION_LOOK.get(approval.state, ("•", approval.state))
                    who = approval.decided_by.get_username() if approval.decided_by_id else ""
                    reason = f": {approval.decision_reason}" if approval.decision_reason else ""
                    lines.append(Line(approval.decided_at, icon, word,
                                      f"{word} {action_words(approval.tool, approval.arguments)}"
                                      + (f" by {who}" if who else "") + reason,
                                      "decision", actor=who, order=approval.pk))
            if step.state in ("pending", "queued") or (step.state == "cancelled" and not step.started_at):
                continue
            at = step.finished_at or step.started_at or step.queued_at or run.created_at
            icon, word = _step_look(step)
            output = step.error if step.state == "failed" and step.error else step.output
            lines.append(Line(at, icon, word, _step_summary(step, incident), f"step step-{step.state}",
                              detail=output if len(output) > 120 or "\n" in output else "",
                              key=f"step-{step.pk}" if step.done else "", order=step.pk,
                              extra={"state": step.state}))
        if run.state == "finished" and run.finished_at:
            summary = run_summary(run)
            lines.append(Line(run.finished_at, "🏁", "Playbook finished",
                              f"Playbook {run.playbook_name}: {run.get_outcome_display()}"
                              + (f" — {shorten(summary, 300)}" if summary else ""), "run", order=run.pk))
    return lines, approvals


def _where(message: OutboundMessage, targets: dict[int, str]) -> str:
    if message.target_id in targets:
        return targets[message.target_id]
    if message.kind == Kind.WEB:
        return "the web console"
    return f"{Kind(message.kind).label} {message.address}" if message.kind in Kind.values else message.kind


def _message_lines(incident: Any, approvals: list[Any]) -> list[Line]:
    from django.db.models import Q

    sent = list(
        OutboundMessage.objects.filter(Q(incident_id=incident.pk) | Q(approval_id__in=[a.pk for a in approvals]),
                                       operation=Operation.SEND)
        .order_by("created_at", "id")
    )
    targets = dict(ChannelTarget.objects.filter(pk__in={m.target_id for m in sent if m.target_id})
                   .values_list("pk", "name"))
    # One line per message text: the same notification to four channels is one event.
    grouped: dict[str, list[OutboundMessage]] = {}
    for message in sent:
        grouped.setdefault(message.text, []).append(message)
    lines = []
    for text, copies in grouped.items():
        places = []
        for copy in copies:
            where = _where(copy, targets)
            if copy.state == "failed":
                where += " (failed)"
            elif copy.state != "delivered":
                where += " (sending)"
            if where not in places:
                places.append(where)
        first = text.split("\n", 1)[0].replace("**", "").replace("`", "")
        lines.append(Line(copies[0].created_at, "✉️", "Message", f"Sent to {', '.join(places)}: {shorten(first, 160)}",
                          "message", detail_html=to_html(text), detail_label="The message", key=f"message-{copies[0].pk}",
                          order=copies[0].pk))
    return lines


def timeline(incident: Any, viewer: Any) -> tuple[list[Line], list[Any]]:
    """(lines newest first, the incident's approvals)."""
    run_lines, approvals = _run_lines(incident, viewer)
    lines = _event_lines(incident) + run_lines + _message_lines(incident, approvals)
    if not any(line.word == "Detected" or line.word == "Alert fired" for line in lines):
        lines.append(Line(incident.opened_at, "🔎", "Opened", incident.title or "Incident opened", "event", order=-1))
    if incident.resolved_at and not any(line.word == "Resolved" for line in lines):
        lines.append(Line(incident.resolved_at, "✅", "Resolved", "Incident resolved", "event", order=10**9))
    kinds = {"event": 0, "run": 1, "approval": 2, "decision": 3, "message": 5}
    lines.sort(key=lambda line: (line.at, kinds.get(line.kind.split()[0], 4), line.order), reverse=True)
    return lines, approvals


def pod_states(incident: Any) -> list[dict[str, str]]:
    """Each affected pod with what its findings say about it, in words."""
    evidence = incident.evidence if isinstance(incident.evidence, dict) else {}
    rows = []
    for pod in incident.affected_pods or []:
        name = str(pod.get("name") if isinstance(pod, dict) else pod)
        states = []
        for finding_type, entry in evidence.items():
            if not isinstance(entry, dict):
                continue
            seen = [str(s).rsplit("/", 1)[-1] for s in entry.get("seen_on") or []]
            if seen and name not in seen:
                continue
            reason = entry.get("waiting_reason") or entry.get("reason") or ""
            restarts = entry.get("restart_count")
            facts = [str(reason)] if reason else []
            if isinstance(restarts, int) and restarts:
                facts.append(f"{restarts} restarts")
            text = words(finding_type, FINDING_WORDS) + (f" ({', '.join(facts)})" if facts else "")
            states.append(text)
        rows.append({"name": name, "status": "; ".join(states) or ("healthy now" if not incident.is_open else "affected")})
    return rows
