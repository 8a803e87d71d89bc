"""The texts people read, in neutral markup (see channels.formatting), one function per event.

Everything that comes from a cluster or a person (names, messages, log lines) is literal text
here; each platform's renderer escapes it.
"""

from __future__ import annotations

from typing import Any

from channels.formatting import (
    FINDING_WORDS,
    action_words,
    arguments_text,
    incident_what,
    incident_workload,
    rca_report,
    rca_text,
    repeats,
    shorten,
    strip_prefix,
    value_text,
    words,
)

SEVERITY_ICON = {"critical": "🔴", "warning": "🟠", "info": "🔵"}
STATE_LINE = {"approved": "✅ Approved", "rejected": "❌ Rejected", "expired": "⌛ Expired", "cancelled": "🚫 Cancelled"}


def _args(arguments: dict[str, Any]) -> str:
    return arguments_text(arguments)


def _cluster(incident: Any) -> str:
    cluster = getattr(incident, "cluster", None)
    return f" on cluster {cluster.name}" if cluster is not None else ""


def incident_title(incident: Any) -> str:
    """`#12 crash-looping: Deployment shop/web` -- what, then where, in plain words."""
    return f"#{incident.pk} {incident_what(incident)}: {incident_workload(incident)}"


def _pods(incident: Any, limit: int) -> str:
    pods = [value_text(p.get("name") if isinstance(p, dict) else p) for p in (incident.affected_pods or [])]
    more = f" (+{len(pods) - limit} more)" if len(pods) > limit else ""
    return ", ".join(pods[:limit]) + more


def incident_opened(incident: Any) -> str:
    icon = SEVERITY_ICON.get(incident.severity, "⚪")
    lines = [f"{icon} **Incident {incident_title(incident)}** ({incident.severity}){_cluster(incident)}"]
    if incident.title:
        lines.append(shorten(incident.title, 500))
    others = [t for t in incident.finding_types or [] if t != incident.primary_type]
    if others:
        lines.append("Also: " + ", ".join(words(t, FINDING_WORDS) for t in others))
    if incident.affected_pods:
        lines.append("Pods: " + _pods(incident, 10))
    # Set by the engine's receiver, which runs first (playbooks comes before channels).
    why = getattr(incident, "no_run_reason", None)
    if isinstance(why, dict) and why.get("text"):
        lines.append(f"No playbook acted: {shorten(str(why['text']), 400)}. An approver can start it anyway: "
                     f"`/incident run {incident.pk}`")
    return "\n".join(lines)


def affected_workloads(total: int, still_open: int, listed: list[Any], namespaces: list[str], *,
                       waiting: bool = False) -> str:
    """Under a parent incident's message: the correlated children, `3 workloads affected`."""
    noun = "workload" if total == 1 else "workloads"
    head = f"🔗 **{total} {noun} affected**"
    if still_open < total:
        head += f" ({total - still_open} recovered)"
    names = ", ".join(incident_workload(child) + ("" if child.state == "open" else " ✅") for child in listed)
    more = f" and {total - len(listed)} more" if total > len(listed) else ""
    lines = [head + f": {names}{more}"]
    if len(namespaces) > 1:
        lines.append("Namespaces: " + ", ".join(namespaces[:15]) + (f" (+{len(namespaces) - 15} more)" if len(namespaces) > 15 else ""))
    if waiting and still_open:
        lines.append("Their remediation waits for this incident's run.")
    return "\n".join(lines)


def storm_summary(storm: Any, cluster_name: str, cause: Any | None, cause_children: int) -> str:
    """The one message per target during an incident storm."""
    where = f" on cluster {cluster_name}" if cluster_name else ""
    seconds = max(1, int((storm.last_at - storm.started_at).total_seconds()))
    lines = [f"🌩️ **Incident storm{where}: {storm.incidents} incidents opened** "
             f"(since {storm.started_at:%H:%M:%S} UTC, {seconds} s)"]
    ranked = sorted(storm.namespaces.items(), key=lambda item: (-item[1], item[0]))
    if ranked:
        shown = ", ".join(f"{ns or 'cluster-wide'} ({n})" for ns, n in ranked[:10])
        lines.append("Namespaces: " + shown + (f" and {len(ranked) - 10} more" if len(ranked) > 10 else ""))
    if cause is not None:
        lines.append(f"Likely common cause: incident {incident_title(cause)} ({cause_children} of them are linked to it)")
    else:
        lines.append("No common cause found by correlation.")
    lines.append("Until it calms down only critical incidents get a message of their own"
                 + (f"; {storm.held_back} held back so far." if storm.held_back else "."))
    return "\n".join(lines)


def digest(entries: list[str], since: Any) -> str:
    head = f"🗞️ **Digest: {len(entries)} info-level message{'s' if len(entries) != 1 else ''}** since {since:%H:%M} UTC"
    shown = [f"• {shorten(text.splitlines()[0] if text else '', 300)}" for text in entries[:30]]
    more = [f"… and {len(entries) - 30} more"] if len(entries) > 30 else []
    return "\n".join([head, *shown, *more])


def incident_resolved(incident: Any) -> str:
    return f"🟢 **Resolved: incident {incident_title(incident)}**{_cluster(incident)}"


def approval_request(approval: Any) -> str:
    lines = [
        f"🔐 **Approval needed: {action_words(approval.tool, approval.arguments)}** ({approval.risk} risk)",
        f"Tool `{approval.tool}`, {_args(approval.arguments)}; code `{approval.code}`",
        f"Why: {shorten(approval.reason, 800)}",
    ]
    if approval.requester:
        lines.append(f"Requested by {approval.requester} ({approval.origin})")
    if approval.expires_at:
        lines.append(f"Expires at {approval.expires_at:%H:%M:%S} UTC. Press a button, or type `approve {approval.code}` "
                     f"or `reject {approval.code} <reason>`.")
    return "\n".join(lines)


def approval_outcome_line(approval: Any) -> str:
    line = STATE_LINE.get(approval.state, approval.state)
    who = getattr(approval.decided_by, "username", "") if approval.decided_by_id else ""
    if who:
        line += f" by {who}"
    if approval.decided_at:
        line += f" at {approval.decided_at:%H:%M:%S} UTC"
    if approval.decision_reason:
        line += f": {shorten(approval.decision_reason, 300)}"
    return line


def approval_decided(approval: Any) -> str:
    """The approval message as edited once decided: the request, then the outcome, no buttons."""
    return approval_request_summary(approval) + "\n" + approval_outcome_line(approval)


def approval_request_summary(approval: Any) -> str:
    return (f"🔐 **{action_words(approval.tool, approval.arguments)}** ({approval.risk} risk)\n"
            f"Tool `{approval.tool}`, {_args(approval.arguments)}; code `{approval.code}`\n"
            f"Why: {shorten(approval.reason, 300)}")


def tool_finished(approval: Any, ok: bool, output: str) -> str:
    head = "✅" if ok else "⚠️"
    verdict = "done" if ok else "failed"
    text = (f"{head} **{action_words(approval.tool, approval.arguments)}: {verdict}** "
            f"(tool `{approval.tool}`, approval `{approval.code}`)")
    if output:
        text += f"\n```\n{shorten(output, 1500)}\n```"
    return text


def rca_ready(incident: Any, report: dict[str, Any]) -> str:
    head = f"🧠 **Root cause analysis: incident {incident_title(incident)}**"
    view = rca_report(report)
    return head if view is None else head + "\n" + rca_text(view)


def run_finished(run: Any) -> str:
    outcome = run.get_outcome_display() if getattr(run, "outcome", "") else "finished"
    incident = getattr(run, "incident", None)
    about = f" for incident {incident_title(incident)}" if incident is not None else ""
    text = f"📋 **Playbook {run.playbook_name}** {outcome}{about}"
    summary = run_summary(run)
    if summary:
        text += f"\n{shorten(summary, 1500)}"
    return text


def run_summary(run: Any) -> str:
    """The run's summary without the workload the title already names (verify writes
    `Deployment/shop/cart: no findings`), and without a part that repeats another."""
    incident = getattr(run, "incident", None)
    parts: list[str] = []
    for part in (run.summary or "").split("; "):
        if incident is not None:
            part = strip_prefix(part, incident.workload_key, incident_workload(incident))
        if part and not repeats(part, parts):
            parts.append(part)
    return "; ".join(parts)
