"""Metrics of silences and maintenance windows (imported by playbooks.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

INCIDENTS_SILENCED = Counter(
    "aiops_incidents_silenced_total",
    "Incidents a silence held back, by when (opened: it opened silenced; applied: a new silence took an open one).",
    ["when"],
)
SILENCE_ENDS = Counter(
    "aiops_silence_incidents_released_total",
    "Incidents still open when their silence ended, by what followed (announced, still_silenced: another silence "
    "matches).",
    ["outcome"],
)
SILENCES_CHANGED = Counter(
    "aiops_silences_total", "Silences created and expired early, by action and where (web, telegram, admin, ...).",
    ["action", "via"],
)
NOTIFICATIONS_QUIETED = Counter(
    "aiops_notifications_quieted_total",
    "Notifications to chat targets that a silence suppressed, or a maintenance window marked or held, by reason.",
    ["reason"],
)
STEPS_HELD = Counter(
    "aiops_steps_held_by_maintenance_total",
    "MEDIUM/HIGH steps not requested because of a maintenance window (wait: queued for its end; handoff), or "
    "because their incident is silenced (silenced).",
    ["outcome"],
)
