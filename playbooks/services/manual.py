"""What a person does to an incident by hand: close it, start its playbook anyway, or cancel
its run.

Both need the same right as deciding the incident's approvals (the approvers of the rule that
ran or would run for it, else the approvers group; superusers when no rule names its own), both
are audited, allowed or refused, and both are one service that chat, the console and the admin
call. Starting a playbook by hand skips only the reasons nothing ran (cooldown, `auto_run` off,
no matching rule); its steps still go through the risk gate: a MEDIUM/HIGH step asks for an
approval like any other.
"""

from __future__ import annotations

from typing import Any

import structlog
from django.conf import settings
from django.utils import timezone

from playbooks.models import Incident, PlaybookRun, Rule

log = structlog.get_logger(__name__)

__all__ = ["ActionRefused", "cancel_run", "close_incident", "may_act_on", "start_playbook"]


class ActionRefused(Exception):
    """Refused, with a reason a person can read (already audited), and a `code` for callers that
    answer machines: `forbidden` (no right), `conflict` (the state refuses it), `invalid` (no such
    playbook), `not_found`."""

    def __init__(self, message: str, code: str = "forbidden") -> None:
        super().__init__(message)
        self.code = code


def _rule_for(incident: Incident) -> Rule | None:
    run = PlaybookRun.objects.filter(incident=incident, rule__isnull=False).select_related("rule").first()
    if run is not None:
        return run.rule
    from playbooks.rules import why_not

    for rule in Rule.objects.filter(enabled=True).select_related("playbook").prefetch_related("clusters"):
        if why_not(rule, incident) is None:
            return rule
    return None


def may_act_on(user: Any, incident: Incident) -> bool:
    """The right to decide the incident's approvals, which is also the right to close it or
    start its playbook."""
    if user is None or not getattr(user, "is_active", False):
        return False
    from playbooks.engine import _approvers_for

    rule = _rule_for(incident)
    names = _approvers_for(rule) if rule is not None else None
    if names:
        return user.get_username() in names
    return bool(user.is_superuser or user.groups.filter(name=settings.AIOPS_APPROVER_GROUP).exists())


def _audit(user: Any, action: str, incident: Incident, outcome: str, detail: str, via: str, **arguments: Any) -> None:
    from agents.models import AuditEntry

    actor = user.get_username() if user is not None else "anonymous"
    AuditEntry.objects.create(
        actor=f"{via}:{actor}"[:200], action=action, outcome=outcome, detail=detail[:4000],
        reason=f"incident #{incident.pk} {incident.primary_type or incident.alertname} {incident.workload_key}",
        arguments={"incident": incident.pk, **arguments},
    )


def _refuse(user: Any, action: str, incident: Incident, message: str, via: str, *, code: str = "forbidden",
            **arguments: Any) -> None:
    _audit(user, action, incident, "refused", message, via, **arguments)
    log.info("incident_action_refused", incident=incident.pk, action=action, user=getattr(user, "username", ""),
             reason=message)
    raise ActionRefused(message, code)


def close_incident(incident_id: int, user: Any, reason: str, *, via: str) -> str:
    """Close an open incident by hand (its runs and pending approvals are then cancelled).
    In the caller's transaction; a refusal is audited and raised (the caller commits it)."""
    from agents.models import AuditEntry
    from playbooks.services.incidents import resolve_incident

    # resolve_incident wants the row locked: a poll resolving it at the same moment waits.
    incident = Incident.objects.select_for_update().filter(pk=incident_id).first()
    if incident is None:
        raise ActionRefused(f"There is no incident #{incident_id}.", "not_found")
    who = user.get_username() if user is not None else "an unknown user"
    if not may_act_on(user, incident):
        _refuse(user, AuditEntry.Action.INCIDENT_CLOSED, incident,
                f"{who} may not close incident #{incident.pk}: only those who may decide its approvals can", via)
    if not incident.is_open:
        return f"Incident #{incident.pk} is already {incident.state}."
    text = f"closed from {via} by {who}: {reason}"
    resolve_incident(incident, now=timezone.now(), reason=text)
    _audit(user, AuditEntry.Action.INCIDENT_CLOSED, incident, "ok", text, via)
    return f"Closed incident #{incident.pk} ({reason})."


def start_playbook(incident_id: int, user: Any, playbook: str = "", *, via: str) -> PlaybookRun:
    """Start the incident's playbook anyway (cooldown, auto_run off, no match): the rule that
    matches best, or the one that runs `playbook`. Its steps still pass the risk gate."""
    from agents.models import AuditEntry
    from playbooks.engine import create_run, start_proposed_run
    from playbooks.rules import why_not

    incident = Incident.objects.select_for_update().filter(pk=incident_id).first()
    if incident is None:
        raise ActionRefused(f"There is no incident #{incident_id}.", "not_found")
    who = user.get_username() if user is not None else "an unknown user"
    action = AuditEntry.Action.RUN_STARTED
    if not may_act_on(user, incident):
        _refuse(user, action, incident, f"{who} may not start a playbook for incident #{incident.pk}: only those "
                "who may decide its approvals can", via, playbook=playbook)
    if not incident.is_open:
        _refuse(user, action, incident, f"incident #{incident.pk} is {incident.state}; nothing to remediate", via,
                code="conflict", playbook=playbook)
    active = PlaybookRun.objects.filter(incident=incident).exclude(state=PlaybookRun.State.FINISHED).first()
    if active is not None:
        if active.state == PlaybookRun.State.PROPOSED and (not playbook or playbook == active.playbook_name):
            start_proposed_run(active.pk, by=who)
            _audit(user, action, incident, "ok", f"started proposed run #{active.pk} ({active.playbook_name})", via,
                   playbook=active.playbook_name, run=active.pk)
            active.refresh_from_db()
            return active
        _refuse(user, action, incident, f"run #{active.pk} ({active.playbook_name}) is already {active.state} for "
                f"incident #{incident.pk}", via, code="conflict", playbook=playbook)
    rules = list(Rule.objects.filter(playbook__enabled=True).select_related("playbook").prefetch_related("clusters"))
    if playbook:
        candidates = [rule for rule in rules if rule.playbook.name == playbook]
        if not candidates:
            known = sorted({rule.playbook.name for rule in rules})
            _refuse(user, action, incident, f"no rule runs a playbook named {playbook!r} (playbooks: "
                    f"{', '.join(known) or 'none'})", via, code="invalid", playbook=playbook)
        candidates.sort(key=lambda rule: (why_not(rule, incident) is not None, not rule.enabled, -rule.priority))
        rule = candidates[0]
    else:
        matching = [rule for rule in rules if rule.enabled and why_not(rule, incident) is None]
        if not matching:
            _refuse(user, action, incident, f"no enabled rule matches incident #{incident.pk}; name a playbook to "
                    "run", via, code="invalid")
        rule = matching[0]
    run = create_run(incident, rule, start=True, reason=f"started by hand by {who} from {via}")
    if run is None:
        _refuse(user, action, incident, f"playbook {rule.playbook.name} could not start (no steps, or no cluster "
                "to act on)", via, code="conflict", playbook=rule.playbook.name)
    assert run is not None
    Incident.objects.filter(pk=incident.pk).update(no_run_reason=None)
    _audit(user, action, incident, "ok", f"started run #{run.pk} ({run.playbook_name}) by hand", via,
           playbook=run.playbook_name, run=run.pk, rule=rule.name)
    log.info("playbook_started_by_hand", incident=incident.pk, run=run.pk, playbook=run.playbook_name, user=who,
             via=via)
    return run



def cancel_run(run_id: int, user: Any, reason: str = "", *, via: str) -> str:
    """Cancel an active run by hand (its pending approvals are cancelled with it): the same right
    as closing its incident. In the caller's transaction; a refusal is audited and raised."""
    from agents.models import AuditEntry
    from playbooks import engine

    run = PlaybookRun.objects.select_related("incident").filter(pk=run_id).first()
    if run is None:
        raise ActionRefused(f"There is no run #{run_id}.", "not_found")
    who = user.get_username() if user is not None else "an unknown user"
    action = AuditEntry.Action.RUN_CANCELLED
    if not may_act_on(user, run.incident):
        _refuse(user, action, run.incident, f"{who} may not cancel run #{run.pk}: only those who may decide the "
                f"approvals of incident #{run.incident_id} can", via, run=run.pk)
    by = f"{who} from {via}" + (f": {reason}" if reason else "")
    if not engine.cancel_run(run.pk, by=by):
        return f"Run #{run.pk} ({run.playbook_name}) has already finished."
    _audit(user, action, run.incident, "ok", f"cancelled run #{run.pk} ({run.playbook_name})"
           + (f": {reason}" if reason else ""), via, run=run.pk, playbook=run.playbook_name)
    log.info("playbook_run_cancelled_by_hand", run=run.pk, incident=run.incident_id, user=who, via=via)
    return f"Cancelled run #{run.pk} ({run.playbook_name})."
