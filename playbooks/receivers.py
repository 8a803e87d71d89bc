"""Receivers of the engine: a new incident starts its rule's playbook; a decided approval
resumes or ends the run that waits on it. Both run inside the sender's transaction, so the
run and the event that caused it commit together (tasks are enqueued on commit).

Each works in a savepoint and logs its own failure instead of raising it: a bug or a database
error in the engine must not undo the incident the watch loop just opened, nor the decision a
person just made (the reconciler picks up a decided approval whose run did not move).
"""

from __future__ import annotations

from typing import Any

import structlog
from django.db import transaction
from django.dispatch import receiver

from agents.signals import approval_decided
from playbooks.signals import incident_opened, incident_resolved

log = structlog.get_logger(__name__)


@receiver(incident_opened, dispatch_uid="playbooks.engine.start_run")
def start_playbook(sender: Any, incident: Any, **kwargs: Any) -> None:
    from playbooks.engine import start_run_for_incident

    try:
        with transaction.atomic():
            start_run_for_incident(incident)
    except Exception:  # noqa: BLE001 - logged with its traceback; the incident stays opened
        log.exception("playbook_start_failed", incident=incident.pk)


@receiver(approval_decided, dispatch_uid="playbooks.engine.approval_decided")
def resume_or_end_run(sender: Any, approval: Any, **kwargs: Any) -> None:
    from playbooks.engine import on_approval_decided

    try:
        with transaction.atomic():
            on_approval_decided(approval)
    except Exception:  # noqa: BLE001 - the reconciler applies the decision on its next pass
        log.exception("playbook_resume_failed", approval=approval.pk)


@receiver(incident_resolved, dispatch_uid="playbooks.engine.incident_resolved")
def cancel_runs_of_closed_incident(sender: Any, incident: Any, reason: str = "", **kwargs: Any) -> None:
    """Runs follow their incident: once it is closed, its active runs and their pending
    approvals are cancelled. In a task after commit, not here: the resolving transaction holds
    the incident's row, and a run recording a step locks its run first, then reads the incident."""
    from playbooks.models import PlaybookRun
    from playbooks.tasks_engine import cancel_incident_runs

    if not PlaybookRun.objects.filter(incident_id=incident.pk).exclude(state="finished").exists():
        return
    incident_id = incident.pk
    transaction.on_commit(lambda: cancel_incident_runs.delay(incident_id, reason[:500]), robust=True)
