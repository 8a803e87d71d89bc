"""The chat router, the same for every platform and the web console. In this order:

1. approval decisions (`approve <code>`, `reject <code> [reason]`; buttons come through
   `press_button`);
2. commands (`/help`, `/incident`, `/approval`, `/alert`, `/silence`, `/k8s`, `/model`, `/reset`,
   `/status`; `!` reads as `/`, since Slack keeps `/` for its own slash commands);
3. free text, for the agents app's assistant.

The router runs inside the inbound view's transaction and only writes: outbox rows (replies),
approvals, stored questions. Anything slow (a tool call, the LLM) is a Celery task enqueued on
commit, so a webhook is answered at once.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Any

import structlog
from django.db import transaction

from channels import metrics, services
from channels.formatting import FINDING_WORDS, action_words, rca_report, shorten, words
from channels.inbound import Inbound
from channels.messages import approval_request, incident_title

log = structlog.get_logger(__name__)

_DECISION = re.compile(r"^[/!]?(?P<decision>approve|reject)\s+(?P<code>[A-Za-z0-9]{4,12})(?:\s+(?P<reason>.+))?$",
                       re.IGNORECASE | re.DOTALL)
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

HELP = """**Commands** (`!` works instead of `/`)
`/incident list` · `/incident show <id>` · `/incident close <id> [reason]` · `/incident run <id> [playbook]`
`/approval list` · `/alert list`
`/silence <namespace>/<workload> <duration> <reason>` · `/silence list` · `/silence expire <id>`
`/k8s pods [namespace]` · `/k8s deployments [namespace]` · `/k8s events [namespace]` · `/k8s nodes`
`/k8s logs <namespace>/<pod> [container]`
`/k8s describe pod|deployment <namespace>/<name>` · `/k8s describe node <name>`
**Changes** (each asks for an approval first)
`/k8s restart <namespace>/<deployment>` · `/k8s restart pod <namespace>/<pod>`
`/k8s scale <namespace>/<deployment> <replicas>` · `/k8s rollback <namespace>/<deployment> [revision]`
`/k8s cordon|uncordon|drain <node>`
**Approvals**: the buttons, or `approve <code>` / `reject <code> [reason]`
**Assistant**: `/model [name]` · `/reset` · `/status`; anything else is a question for the assistant."""

# Read commands: /k8s <word> -> LOW tool
READS = {"pods": "list_pods", "deployments": "list_deployments", "events": "list_events", "nodes": "list_nodes"}
DESCRIBE = {"pod": "describe_pod", "deployment": "describe_deployment", "node": "describe_node"}
CHANGES = ("restart", "scale", "rollback", "cordon", "uncordon", "drain")


class UsageError(Exception):
    """The command is malformed; the message says what was expected."""


def is_decision(text: str) -> bool:
    return _DECISION.match(text.strip()) is not None


# --- replies -----------------------------------------------------------------------------------
def reply(inbound: Inbound, text: str, *, approval_id: int | None = None, dedupe_key: str | None = None) -> Any:
    return services.queue_message(
        kind=inbound.kind,
        address=inbound.address,
        text=text,
        reply_to=inbound.reply_to,
        approval_id=approval_id,
        with_buttons=approval_id is not None,
        dedupe_key=dedupe_key,
    )


# --- entry point -------------------------------------------------------------------------------
def handle(inbound: Inbound) -> None:
    text = (inbound.text or "").strip()
    if not text:
        return
    decision = _DECISION.match(text)
    if decision:
        metrics.COMMANDS.labels(decision["decision"].lower()).inc()
        outcome = decide(inbound, decision["code"], decision["decision"].lower(), (decision["reason"] or "").strip())
        reply(inbound, outcome)
        return
    if text[0] in "/!":
        _command(inbound, text[1:])
        return
    _free_text(inbound, text)


def _command(inbound: Inbound, body: str) -> None:
    try:
        words = shlex.split(body)
    except ValueError:
        words = body.split()
    if not words:
        reply(inbound, HELP)
        return
    name = words[0].split("@", 1)[0].lower()  # Telegram groups send /help@botname
    args = words[1:]
    handler = COMMANDS.get(name)
    metrics.COMMANDS.labels(name if handler else "unknown").inc()
    if handler is None:
        reply(inbound, f"Unknown command `/{name}`. Try /help.")
        return
    if name not in ("help", "start", "whoami") and inbound.user is None:
        reply(inbound, _refuse_stranger(inbound, f"/{name}"))
        return
    try:
        handler(inbound, args)
    except UsageError as exc:
        reply(inbound, str(exc))
    log.info("chat_command", kind=inbound.kind, command=name, user=inbound.who)


def _refuse_stranger(inbound: Inbound, attempted: str) -> str:
    """Refuse a platform user no account is linked to: audited, and told how to get linked."""
    from agents.access import audit_access_refused

    audit_access_refused(actor=f"{inbound.kind}:{inbound.platform_user_id}", where=f"chat ({inbound.kind})",
                         attempted=f"{attempted}: {shorten(inbound.text or '', 300)}",
                         reason="no account is linked to this chat user")
    return _stranger(inbound)


def _stranger(inbound: Inbound) -> str:
    return (f"I don't know who you are yet. Ask an admin to link your {inbound.kind} user id "
            f"`{inbound.platform_user_id}` to your account (Admin → Chat channels → Identities).")


# --- approvals ---------------------------------------------------------------------------------
def decide(inbound: Inbound, approval_ref: int | str, decision: str, reason: str = "") -> str:
    """Decide as the person behind `inbound`; returns what to tell them. Never raises for refusals."""
    from agents.approvals import ApprovalError, decide_approval

    if inbound.user is None:
        metrics.APPROVAL_CLICKS.labels(inbound.kind, "unknown_user").inc()
        log.info("chat_decision_refused", kind=inbound.kind, platform_user=inbound.platform_user_id, reason="unknown")
        return "Refused: " + _refuse_stranger(inbound, f"{decision} approval {approval_ref}")
    try:
        approval = decide_approval(approval_ref, inbound.user, decision, reason)
    except ApprovalError as exc:
        outcome = "already_decided" if "already" in str(exc) else "refused"
        metrics.APPROVAL_CLICKS.labels(inbound.kind, outcome).inc()
        log.info("chat_decision_refused", kind=inbound.kind, user=inbound.who, approval=str(approval_ref), reason=str(exc))
        return f"Refused: {exc}."
    metrics.APPROVAL_CLICKS.labels(inbound.kind, approval.state).inc()
    verb = "Approved" if approval.state == "approved" else "Rejected"
    return f"{verb} `{approval.code}` ({approval.tool}) as {inbound.who}."


def _approval_list(inbound: Inbound, args: list[str]) -> None:
    from agents.models import Approval

    if args and args[0] != "list":
        raise UsageError("Usage: `/approval list`")
    pending = list(Approval.objects.filter(state=Approval.State.PENDING).order_by("requested_at")[:20])
    if not pending:
        reply(inbound, "No approvals are pending.")
        return
    lines = ["**Pending approvals**"]
    for approval in pending:
        lines.append(f"`{approval.code}` {action_words(approval.tool, approval.arguments)}, {approval.risk} risk "
                     f"(`{approval.tool}`), expires {approval.expires_at:%H:%M:%S} UTC")
    reply(inbound, "\n".join(lines))


# --- incidents ---------------------------------------------------------------------------------
def _incident(inbound: Inbound, args: list[str]) -> None:
    from playbooks.models import Incident

    sub = args[0].lower() if args else "list"
    if sub == "list":
        incidents = list(Incident.objects.filter(state=Incident.State.OPEN).select_related("cluster")[:20])
        if not incidents:
            reply(inbound, "No open incidents. 🎉")
            return
        lines = [f"**Open incidents** ({len(incidents)})"]
        lines += [f"{incident_title(i)} ({i.severity}) since {i.opened_at:%Y-%m-%d %H:%M} UTC" for i in incidents]
        reply(inbound, "\n".join(lines))
        return
    if sub not in ("show", "close", "run") or len(args) < 2 or not args[1].lstrip("#").isdigit():
        raise UsageError("Usage: `/incident list`, `/incident show <id>`, `/incident close <id> [reason]` or "
                         "`/incident run <id> [playbook]`")
    incident = Incident.objects.select_related("cluster").filter(pk=int(args[1].lstrip("#"))).first()
    if incident is None:
        raise UsageError(f"There is no incident #{args[1].lstrip('#')}.")
    if sub == "show":
        reply(inbound, _incident_details(incident))
        return
    if sub == "run":
        reply(inbound, run_playbook(incident, inbound, args[2] if len(args) > 2 else ""))
        return
    reason = " ".join(args[2:]) or f"closed from {inbound.kind} by {inbound.who}"
    reply(inbound, close_incident(incident, inbound, reason))


def _incident_details(incident: Any) -> str:
    lines = [f"**Incident {incident_title(incident)}** ({incident.state}, {incident.severity})"]
    if incident.cluster_id:
        lines.append(f"Cluster: {incident.cluster.name}")
    if incident.title:
        lines.append(shorten(incident.title, 500))
    lines.append(f"Opened {incident.opened_at:%Y-%m-%d %H:%M:%S} UTC, last seen {incident.last_seen_at:%H:%M:%S} UTC, "
                 f"seen {incident.count} times")
    if incident.finding_types:
        lines.append("Findings: " + ", ".join(words(t, FINDING_WORDS) for t in incident.finding_types))
    if incident.affected_pods:
        lines.append("Pods: " + ", ".join(str(p) for p in incident.affected_pods[:15]))
    report = rca_report(incident.rca_report)
    if report is not None:
        lines.append(f"Root cause: {report.class_words}. {shorten(report.root_cause, 800)}")
    why = incident.no_run_reason if isinstance(incident.no_run_reason, dict) else {}
    if why.get("text"):
        lines.append(f"Why no playbook acted: {shorten(str(why['text']), 500)}")
        if incident.is_open:
            lines.append(f"An approver can start it anyway: `/incident run {incident.pk}`")
    return "\n".join(lines)


def close_incident(incident: Any, inbound: Inbound, reason: str) -> str:
    """Close an open incident as the person behind `inbound` (who needs the right to decide its
    approvals; audited either way); returns what to tell them."""
    from playbooks.services.manual import ActionRefused
    from playbooks.services.manual import close_incident as close

    try:
        return close(incident.pk, inbound.user, reason, via=inbound.kind)
    except ActionRefused as exc:
        return f"Refused: {exc}"


def run_playbook(incident: Any, inbound: Inbound, playbook: str = "") -> str:
    """`/incident run <id> [playbook]`: start the playbook anyway (approvers; audited; its
    steps still go through the risk gate)."""
    from playbooks.services.manual import ActionRefused, start_playbook

    try:
        run = start_playbook(incident.pk, inbound.user, playbook, via=inbound.kind)
    except ActionRefused as exc:
        return f"Refused: {exc}"
    return (f"Started playbook {run.playbook_name} (run #{run.pk}) for incident #{incident.pk}; "
            "risky steps still ask for approval.")


def _alert(inbound: Inbound, args: list[str]) -> None:
    from playbooks.models import Incident

    if args and args[0] != "list":
        raise UsageError("Usage: `/alert list`")
    alerts = list(Incident.objects.filter(state=Incident.State.OPEN, source=Incident.Source.ALERTMANAGER)[:20])
    if not alerts:
        reply(inbound, "No Alertmanager alerts are firing.")
        return
    lines = ["**Firing alerts**"]
    lines += [f"#{a.pk} {a.alertname} ({a.severity}) {shorten(a.title, 200)}".rstrip() for a in alerts]
    reply(inbound, "\n".join(lines))


# --- kubernetes ----------------------------------------------------------------------------------
def _namespaced(value: str, what: str, rest: list[str]) -> tuple[str, str, list[str]]:
    """`ns/name` or `ns name` -> (ns, name, remaining words)."""
    if "/" in value:
        namespace, _, name = value.partition("/")
    elif rest:
        namespace, name, rest = value, rest[0], rest[1:]
    else:
        raise UsageError(f"Give the {what} as `<namespace>/<name>`.")
    for part in (namespace, name):
        if not _NAME.fullmatch(part) or len(part) > 253:
            raise UsageError(f"{part!r} is not a valid Kubernetes name.")
    return namespace, name, rest


def _valid_name(value: str) -> str:
    if not _NAME.fullmatch(value) or len(value) > 253:
        raise UsageError(f"{value!r} is not a valid Kubernetes name.")
    return value


def _k8s(inbound: Inbound, args: list[str]) -> None:
    if not args:
        raise UsageError("Usage: `/k8s pods|deployments|events|nodes|logs|describe|restart|scale|rollback|cordon|drain ...` (see /help)")
    verb, rest = args[0].lower(), args[1:]
    if verb in READS:
        tool_args: dict[str, Any] = {}
        if rest and verb != "nodes":
            tool_args["namespace"] = _valid_name(rest[0])
        if verb == "pods" and len(rest) > 1 and rest[1] == "problems":
            tool_args["problems_only"] = True
        _run_read(inbound, READS[verb], tool_args)
    elif verb == "logs":
        if not rest:
            raise UsageError("Usage: `/k8s logs <namespace>/<pod> [container]`")
        namespace, name, rest = _namespaced(rest[0], "pod", rest[1:])
        tool_args = {"namespace": namespace, "name": name, "tail": 100}
        if rest:
            tool_args["container"] = _valid_name(rest[0])
        _run_read(inbound, "get_pod_logs", tool_args)
    elif verb == "describe":
        if len(rest) < 2 or rest[0].lower() not in DESCRIBE:
            raise UsageError("Usage: `/k8s describe pod|deployment <namespace>/<name>` or `/k8s describe node <name>`")
        what = rest[0].lower()
        if what == "node":
            _run_read(inbound, "describe_node", {"name": _valid_name(rest[1])})
        else:
            namespace, name, _ = _namespaced(rest[1], what, rest[2:])
            _run_read(inbound, DESCRIBE[what], {"namespace": namespace, "name": name})
    elif verb in CHANGES:
        tool, tool_args = _change(verb, rest)
        _request_change(inbound, tool, tool_args)
    else:
        raise UsageError(f"Unknown `/k8s {verb}`. See /help.")


def _change(verb: str, rest: list[str]) -> tuple[str, dict[str, Any]]:
    if verb in ("cordon", "uncordon", "drain"):
        if len(rest) != 1:
            raise UsageError(f"Usage: `/k8s {verb} <node>`")
        return f"{verb}_node", {"name": _valid_name(rest[0])}
    if verb == "restart" and rest and rest[0].lower() == "pod":
        if len(rest) < 2:
            raise UsageError("Usage: `/k8s restart pod <namespace>/<pod>`")
        namespace, name, _ = _namespaced(rest[1], "pod", rest[2:])
        return "restart_pod", {"namespace": namespace, "name": name}
    if not rest:
        raise UsageError(f"Usage: `/k8s {verb} <namespace>/<deployment>`" + (" <replicas>" if verb == "scale" else ""))
    if rest[0].lower() == "deployment":
        rest = rest[1:]
    if not rest:
        raise UsageError(f"Usage: `/k8s {verb} <namespace>/<deployment>`")
    namespace, name, rest = _namespaced(rest[0], "deployment", rest[1:])
    tool_args: dict[str, Any] = {"namespace": namespace, "name": name}
    if verb == "scale":
        if len(rest) != 1 or not (rest[0].isascii() and rest[0].isdigit()):
            raise UsageError("Usage: `/k8s scale <namespace>/<deployment> <replicas>` (replicas is a whole number)")
        tool_args["replicas"] = int(rest[0])
    if verb == "rollback" and rest:
        if not (rest[0].isascii() and rest[0].isdigit()):
            raise UsageError("Usage: `/k8s rollback <namespace>/<deployment> [revision]` (revision is a number)")
        tool_args["revision"] = int(rest[0])
    return {"restart": "restart_deployment", "scale": "scale_deployment", "rollback": "rollback_deployment"}[verb], tool_args


def _run_read(inbound: Inbound, tool: str, tool_args: dict[str, Any]) -> None:
    from channels.tasks import run_chat_tool

    update_id = inbound.update_id
    if update_id is None:
        raise UsageError("This message cannot run commands (no stored update).")
    transaction.on_commit(lambda: run_chat_tool.delay(update_id, tool, tool_args))


def _request_change(inbound: Inbound, tool: str, tool_args: dict[str, Any]) -> None:
    from agents.approvals import ApprovalError, request_approval

    try:
        approval = request_approval(
            tool,
            tool_args,
            reason=f"{inbound.who} asked in {inbound.kind}: {shorten(inbound.text, 300)}",
            origin="chat",
            requested_by=inbound.user,
            requester=inbound.who,
            origin_ref=f"{inbound.kind}:{inbound.conversation}"[:200],
        )
    except ApprovalError as exc:
        reply(inbound, f"Cannot request that: {exc}.")
        return
    # The buttons go to the conversation itself (on Discord the channel, whose messages stay
    # editable, rather than the short-lived interaction), keyed like the approval targets' copy.
    sent = services.queue_message(
        kind=inbound.kind,
        address=inbound.conversation,
        text=approval_request(approval),
        reply_to=inbound.reply_to,
        approval_id=approval.pk,
        with_buttons=True,
        dedupe_key=f"approval:{approval.pk}:{inbound.kind}:{inbound.conversation}"[:200],
    )
    if sent is None or inbound.address != inbound.conversation:
        # This chat is also an approval target and has the buttons already, or the person
        # asked through an interaction that must be answered.
        reply(inbound, f"Approval `{approval.code}` requested for {tool}; it waits for an approver.")


# --- assistant ---------------------------------------------------------------------------------
def _assistant(call: Callable[[Any, str, list[str]], str]) -> Callable[[Inbound, list[str]], None]:
    def run(inbound: Inbound, args: list[str]) -> None:
        reply(inbound, call(inbound.user, inbound.kind, args))

    return run


def _model(user: Any, kind: str, args: list[str]) -> str:
    from agents.conversations import set_model

    return set_model(user, kind, args[0] if args else "")


def _reset(user: Any, kind: str, args: list[str]) -> str:
    from agents.conversations import reset

    return reset(user, kind)


def _status(user: Any, kind: str, args: list[str]) -> str:
    from agents.conversations import status

    return status(user, kind)


def _free_text(inbound: Inbound, text: str) -> None:
    if inbound.user is None:
        reply(inbound, _refuse_stranger(inbound, "a question for the assistant"))
        return
    from agents.conversations import submit

    metrics.COMMANDS.labels("ask").inc()
    context = inbound.reply_context()
    context["address"] = inbound.address  # answer where asked (a Discord interaction waits for it)
    context["conversation"] = inbound.conversation
    submit(inbound.user, inbound.kind, text, reply_to=context)


def _silence(inbound: Inbound, args: list[str]) -> None:
    from channels.chat_silences import handle as silence

    silence(inbound, args)


def _help(inbound: Inbound, args: list[str]) -> None:
    reply(inbound, HELP)


def _whoami(inbound: Inbound, args: list[str]) -> None:
    if inbound.user is None:
        reply(inbound, _stranger(inbound))
    else:
        reply(inbound, f"You are {inbound.who} ({inbound.kind} user id `{inbound.platform_user_id}`).")


COMMANDS: dict[str, Callable[[Inbound, list[str]], None]] = {
    "help": _help,
    "start": _help,
    "whoami": _whoami,
    "incident": _incident,
    "incidents": _incident,
    "approval": _approval_list,
    "approvals": _approval_list,
    "alert": _alert,
    "alerts": _alert,
    "k8s": _k8s,
    "silence": _silence,
    "silences": _silence,
    "model": _assistant(_model),
    "reset": _assistant(_reset),
    "status": _assistant(_status),
}
