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
# kwargs: parent, child (playbooks.Incident), reason (dict: cause, text, ...) -- the child was just
# linked to the parent whose cause explains it (correlation); its messages fold into the parent's
incident_correlated = Signal()
# kwargs: cluster_id (int | None: an alert batch may span clusters), opened, resolved, linked (lists of
# incident ids) -- sent once
# at the end of an ingest (a poll, a watch pass, an alert batch) inside its transaction, so that a
# receiver can do once per batch what the per-incident signals would repeat (a parent's message
# that 200 children fold into, a storm's summary)
incidents_ingested = Signal()
