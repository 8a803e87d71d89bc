"""Signals the playbooks app sends; channels receives them (outbox rows in the same transaction)."""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: incident (playbooks.Incident)
incident_opened = Signal()
# kwargs: incident (playbooks.Incident)
incident_resolved = Signal()
# kwargs: incident (playbooks.Incident), report (dict, the RCA report), run (PlaybookRun | None)
rca_ready = Signal()
# kwargs: incident (playbooks.Incident | None), run (PlaybookRun | None), text (str), severity (str)
notification_requested = Signal()
# kwargs: run (playbooks.PlaybookRun) -- run.outcome says how it ended
run_finished = Signal()
