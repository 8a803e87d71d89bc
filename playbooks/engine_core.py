"""The engine's run transitions, shared by starting, stepping and recovering runs: queue the
next step (or finish the run with its outcome), finish a run, note why nothing ran.

Callers hold the run's row lock (lock order everywhere: the run's row, then its step's row).
"""

from __future__ import annotations

from typing import Any

import structlog
from django.db import transaction
from django.utils import timezone

from playbooks import metrics_engine as metrics
from playbooks.models import PlaybookRun, Step, StepRun
from playbooks.signals import run_finished
from playbooks.steps import MUTATING

log = structlog.get_logger("playbooks.engine")

S = StepRun.State
R = PlaybookRun.State
Outcome = PlaybookRun.Outcome


def note_no_run(incident: Any, why: dict[str, Any] | None) -> None:
    """Why no playbook ran (or acted), as data on the incident: every surface shows it."""
    incident.no_run_reason = why
    if getattr(incident, "announcing", False):
        incident.no_run_decided = True  # written by the announcement's last statement (playbooks.services.announce)
        return
    type(incident).objects.filter(pk=incident.pk).update(no_run_reason=why)


def _cancel_pending_approvals(run: PlaybookRun, reason: str) -> None:
    """Nobody may approve a step of a run that ended: its pending approvals are cancelled (every
    copy of their message edited)."""
    from agents.services import cancel_approval

    for approval_id in StepRun.objects.filter(run=run, approval__state="pending").values_list("approval_id", flat=True):
        cancel_approval(approval_id, reason)


# --- Moving a run forward (callers hold the run's row) -----------------------------------


# Broker priorities (Redis: 0 is served first). A step a person just approved goes ahead of
# the backlog an incident storm queues up, so "approve" acts at once; re-checks and retries,
# which wait anyway, go last.
PRIORITY_APPROVED = 0
PRIORITY_STEP = 3
PRIORITY_RECHECK = 6


def _enqueue(step_run_id: int, countdown: float | None = None, priority: int = PRIORITY_STEP) -> None:
    from playbooks.tasks_engine import run_step

    # robust: a broker that is down at commit time must not turn a committed transition into
    # an error; the row says queued and the reconciler sends the message again.
    transaction.on_commit(
        lambda: run_step.apply_async((step_run_id,), countdown=countdown, priority=priority), robust=True
    )


def _queue_next(run: PlaybookRun) -> None:
    step = run.steps.filter(state=S.PENDING).order_by("order").first()
    if step is None:
        outcome, summary = _final_outcome(run)
        finish_run(run, outcome, summary)
        return
    now = timezone.now()
    if StepRun.objects.filter(pk=step.pk, state=S.PENDING).update(state=S.QUEUED, queued_at=now, updated_at=now):
        _enqueue(step.pk)


def _final_outcome(run: PlaybookRun) -> tuple[str, str]:
    steps = list(run.steps.order_by("order"))
    failed = [s for s in steps if s.state == S.FAILED and s.kind != Step.Kind.VERIFY]
    notes = [f"step {s.order} {s.name} failed: {s.error[:200]}" for s in failed]
    if run.dry_run:
        return Outcome.DRY_RUN, "dry run: every step rendered and recorded, no tool called"
    verdict = (run.context or {}).get("verdict")
    if verdict:
        detail = (run.context or {}).get("verdict_detail", "")
        skipped_actions = [s for s in steps if s.state == S.SKIPPED and s.risk in MUTATING]
        if verdict == Outcome.FIX_DID_NOT_HOLD and skipped_actions:
            why = "; ".join(s.output for s in skipped_actions)
            return Outcome.NOT_REMEDIATED, f"still failing and no action was taken ({why}): {detail}"
        return verdict, "; ".join([detail, *notes])
    return Outcome.COMPLETED, "; ".join(notes) or "all steps done"


def finish_run(run: PlaybookRun, outcome: str, summary: str = "") -> bool:
    now = timezone.now()
    updated = PlaybookRun.objects.filter(pk=run.pk).exclude(state=R.FINISHED).update(
        state=R.FINISHED, outcome=outcome, finished_at=now, updated_at=now, summary=summary[:4000]
    )
    if not updated:
        return False
    StepRun.objects.filter(run=run, state__in=[S.PENDING, S.QUEUED, S.WAITING_APPROVAL]).update(
        state=S.CANCELLED, finished_at=now, updated_at=now
    )
    run.refresh_from_db()
    metrics.RUNS_FINISHED.labels(run.playbook_name, outcome).inc()
    log.info("playbook_run_finished", run=run.pk, incident=run.incident_id, outcome=outcome, summary=summary[:300])
    run_finished.send(sender=PlaybookRun, run=run)
    return True
