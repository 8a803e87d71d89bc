"""The texts people read, in neutral markup (see channels.formatting), one function per event.

Everything that comes from a cluster or a person (names, messages, log lines) is literal text
here; each platform's renderer escapes it.
"""

from __future__ import annotations

from typing import Any

from channels.formatting import shorten

SEVERITY_ICON = {"critical": "🔴", "warning": "🟠", "info": "🔵"}
STATE_LINE = {"approved": "✅ Approved", "rejected": "❌ Rejected", "expired": "⌛ Expired"}


def _args(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(arguments.items())) or "no arguments"


def _cluster(incident: Any) -> str:
    cluster = getattr(incident, "cluster", None)
    return f" on cluster {cluster.name}" if cluster is not None else ""


def incident_title(incident: Any) -> str:
    what = incident.primary_type or incident.alertname or "incident"
    where = incident.workload_key if incident.workload_name else (incident.alertname or "")
    return f"#{incident.pk} {what} {where}".strip()


def incident_opened(incident: Any) -> str:
    icon = SEVERITY_ICON.get(incident.severity, "⚪")
    lines = [f"{icon} **Incident {incident_title(incident)}** ({incident.severity}){_cluster(incident)}"]
    if incident.title:
        lines.append(shorten(incident.title, 500))
    if incident.finding_types:
        lines.append("Findings: " + ", ".join(incident.finding_types))
    pods = list(incident.affected_pods or [])
    if pods:
        lines.append("Pods: " + ", ".join(str(p) for p in pods[:10]) + (f" (+{len(pods) - 10} more)" if len(pods) > 10 else ""))
    return "\n".join(lines)


def incident_resolved(incident: Any) -> str:
    return f"🟢 **Resolved: incident {incident_title(incident)}**{_cluster(incident)}"


def approval_request(approval: Any) -> str:
    lines = [
        f"🔐 **Approval needed: {approval.tool}** ({approval.risk} risk), code `{approval.code}`",
        f"Arguments: {_args(approval.arguments)}",
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
    return (f"🔐 **{approval.tool}** ({approval.risk} risk), code `{approval.code}`\n"
            f"Arguments: {_args(approval.arguments)}\nWhy: {shorten(approval.reason, 300)}")


def tool_finished(approval: Any, ok: bool, output: str) -> str:
    head = "✅" if ok else "⚠️"
    verdict = "done" if ok else "failed"
    text = f"{head} **{approval.tool} {verdict}** (approval `{approval.code}`): {_args(approval.arguments)}"
    if output:
        text += f"\n```\n{shorten(output, 1500)}\n```"
    return text


def rca_ready(incident: Any, report: dict[str, Any]) -> str:
    lines = [f"🧠 **Root cause analysis: incident {incident_title(incident)}**"]
    for key, label in (("failure_class", "Class"), ("summary", "Summary"), ("root_cause", "Root cause"),
                       ("confidence", "Confidence")):
        if report.get(key) not in (None, ""):
            lines.append(f"{label}: {shorten(str(report[key]), 1200)}")
    actions = report.get("recommended_actions") or report.get("recommendations") or []
    if isinstance(actions, list) and actions:
        lines.append("Recommended:")
        for action in actions[:5]:
            lines.append(f"- {shorten(action if isinstance(action, str) else str(action.get('description') or action), 300)}")
    return "\n".join(lines)


def run_finished(run: Any) -> str:
    outcome = run.get_outcome_display() if getattr(run, "outcome", "") else "finished"
    incident = getattr(run, "incident", None)
    about = f" for incident {incident_title(incident)}" if incident is not None else ""
    text = f"📋 **Playbook {run.playbook_name}** {outcome}{about}"
    if run.summary:
        text += f"\n{shorten(run.summary, 1500)}"
    return text
