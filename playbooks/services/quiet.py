"""What silences and maintenance windows change for the engine and for notifications.

- `hold_step(run, step)`: the engine's hook before it requests an approval (inside `_record`'s
  transaction, holding the run's row). A silenced incident's step is not requested and its run
  ends; during a maintenance window covering the incident a MEDIUM/HIGH step is not requested:
  it is queued again for the window's end (`not_before`, which the reconciler respects), or the
  run hands off, as the rule says (`Rule.in_maintenance`).
- `notification_quiet(incident_id)`: what the channels' receivers ask before they fan out a
  notification about an incident: suppressed (silenced), held until a window ends, or marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from django.utils import timezone

from playbooks import metrics_quiet as metrics
from playbooks.maintenance import Period, active_period, end_words, scope_words
from playbooks.models import ClusterEvent, Incident, MaintenanceWindow, Silence

log = structlog.get_logger("playbooks.engine")


def maintenance_line(period: Period) -> str:
    return f"maintenance window {period.window.name} ({scope_words(period.window)}) until {end_words(period)}"


def hold_step(run: Any, step: Any) -> bool:
    """True when the step must not be requested now; the step and run are updated accordingly."""
    from playbooks.engine_core import PRIORITY_RECHECK, Outcome, S, _enqueue, finish_run, note_no_run
    from playbooks.services.silences import active_silence_of, silence_line

    now = timezone.now()
    incident = run.incident
    silence = active_silence_of(incident, now)
    if silence is not None:
        step.state = S.CANCELLED
        step.output = f"not requested: incident #{incident.pk} is {silence_line(silence, now)}"
        step.finished_at = now
        step.save(update_fields=["state", "rendered_args", "risk", "output", "finished_at", "updated_at"])
        metrics.STEPS_HELD.labels("silenced").inc()
        log.info("step_not_requested", reason="silenced", silence=silence.pk, tool=step.tool)
        finish_run(run, Outcome.CANCELLED, f"cancelled: the incident is {silence_line(silence, now)}")
        return True
    period = active_period(run.cluster_id, incident.namespace, now)
    reason = incident.no_run_reason if isinstance(incident.no_run_reason, dict) else {}
    if period is None:
        if step.not_before is not None or reason.get("code") == "maintenance":
            step.not_before = None
            step.save(update_fields=["not_before", "updated_at"])
            if reason.get("code") == "maintenance":
                note_no_run(incident, None)
            log.info("step_released_by_maintenance", tool=step.tool, step_run=step.pk)
        return False
    line = maintenance_line(period)
    handoff = run.rule is not None and run.rule.in_maintenance == "handoff"
    what = f"step {step.order} ({step.name}) of run #{run.pk}"
    if handoff:
        step.state = S.SKIPPED
        step.output = f"not requested: {line}; handed to a person"
        step.finished_at = now
        step.save(update_fields=["state", "rendered_args", "risk", "output", "finished_at", "updated_at"])
        note_no_run(incident, {"code": "maintenance", "window": period.window.pk, "until": period.end.isoformat(),
                               "text": f"{line}: {what} was not requested; rule {run.rule.name} hands off during "
                                       "maintenance"})
        metrics.STEPS_HELD.labels("handoff").inc()
        log.info("step_not_requested", reason="maintenance", window=period.window.name, outcome="handoff",
                 until=period.end.isoformat(), tool=step.tool)
        _timeline(incident, f"In {line}: {what} was not requested; handed off to a person", period)
        finish_run(run, Outcome.HANDED_OFF, f"Not acting during {line}: {step.tool} was not requested.")
        return True
    first = step.not_before is None
    step.state = S.QUEUED
    step.queued_at = now
    step.not_before = period.end
    step.output = f"waiting: {line}; asks for its approval then"
    step.save(update_fields=["state", "rendered_args", "risk", "output", "queued_at", "not_before", "updated_at"])
    delay = max((period.end - now).total_seconds(), 0.0) + 1.0
    _enqueue(step.pk, countdown=delay, priority=PRIORITY_RECHECK)
    if first:
        note_no_run(incident, {"code": "maintenance", "window": period.window.pk, "until": period.end.isoformat(),
                               "text": f"{line}: {what} waits for its end before asking for an approval"})
        metrics.STEPS_HELD.labels("wait").inc()
        log.info("step_held_by_maintenance", window=period.window.name, until=period.end.isoformat(), tool=step.tool,
                 step_run=step.pk)
        _timeline(incident, f"In {line}: {what} ({step.tool}) waits for its end", period)
    return True


def _timeline(incident: Any, message: str, period: Period) -> None:
    ClusterEvent.objects.create(
        cluster_id=incident.cluster_id, incident=incident, kind=ClusterEvent.Kind.MAINTENANCE,
        finding_type=incident.primary_type, alertname=incident.alertname, workload_kind=incident.workload_kind,
        namespace=incident.namespace, workload_name=incident.workload_name, severity=incident.severity,
        message=message, data={"window": period.window.pk, "until": period.end.isoformat()},
    )


@dataclass(frozen=True)
class Quiet:
    silence: Silence | None = None
    period: Period | None = None

    @property
    def suppressed(self) -> bool:
        return self.silence is not None

    @property
    def hold_until(self) -> datetime | None:
        if self.period is not None and self.period.window.notifications == MaintenanceWindow.Notifications.HOLD:
            return self.period.end
        return None

    def mark(self, text: str) -> str:
        if self.period is None:
            return text
        if self.hold_until is not None:
            return f"🔧 Held during {maintenance_line(self.period)}:\n{text}"
        return f"🔧 In {maintenance_line(self.period)}:\n{text}"


NOT_QUIET = Quiet()


def notification_quiet(incident_id: int | None, now: datetime | None = None) -> Quiet:
    if incident_id is None:
        return NOT_QUIET
    now = now or timezone.now()
    row = Incident.objects.filter(pk=incident_id).values("silenced_by_id", "cluster_id", "namespace").first()
    if row is None:
        return NOT_QUIET
    if row["silenced_by_id"] is not None:
        silence = Silence.objects.filter(Silence.active_q(now), pk=row["silenced_by_id"]).first()
        if silence is not None:
            return Quiet(silence=silence)
    period = active_period(row["cluster_id"], row["namespace"], now)
    return Quiet(period=period) if period is not None else NOT_QUIET
