"""Notifications about an incident under a silence or in a maintenance window.

Asked by the receivers before they fan a notification out: a silenced incident's notifications
are not written at all (its timeline says it is silenced); during a maintenance window covering
it they are marked as in maintenance, or held until the window ends (the outbox row waits for
`next_attempt_at`), as the window says."""

from __future__ import annotations

from datetime import datetime

import structlog

from playbooks import metrics_quiet as metrics

log = structlog.get_logger(__name__)


def apply(incident_id: int, text: str, targets: int) -> tuple[str | None, datetime | None]:
    """(the text to send, or None to send nothing; hold the messages until this moment, or None)."""
    from playbooks.services.quiet import notification_quiet

    quiet = notification_quiet(incident_id)
    if quiet.suppressed:
        assert quiet.silence is not None
        metrics.NOTIFICATIONS_QUIETED.labels("silence").inc(targets)
        log.info("notification_suppressed", incident=incident_id, silence=quiet.silence.pk, targets=targets)
        return None, None
    if quiet.period is None:
        return text, None
    held = quiet.hold_until
    metrics.NOTIFICATIONS_QUIETED.labels("maintenance_held" if held else "maintenance_marked").inc(targets)
    log.info("notification_in_maintenance", incident=incident_id, window=quiet.period.window.name,
             held_until=held.isoformat() if held else None, targets=targets)
    return quiet.mark(text), held
