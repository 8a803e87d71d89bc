"""Celery tasks of the engine. Thin: they take ids and call `playbooks.engine`.

Task names are stable API. `acks_late` (the app default) is what makes a killed worker's step
run again; the StepRun claim (a conditional update) is what makes running it again safe.
"""

from __future__ import annotations

import structlog
from celery import shared_task
from django.conf import settings

from agents.task_limits import task_limits

log = structlog.get_logger(__name__)


def _step_limits() -> dict[str, int]:
    """An RCA step does LLM work: its limits come from LLM_RCA_TIME_LIMIT (plus gathering the
    bundle) when that is above the global task limit, so a slow model ends at the RCA's own
    deadline with a deterministic report, not at a kill."""
    rca = task_limits(settings.LLM_RCA_TIME_LIMIT + 30)
    return {
        "soft_time_limit": max(rca["soft_time_limit"], settings.CELERY_TASK_SOFT_TIME_LIMIT),
        "time_limit": max(rca["time_limit"], settings.CELERY_TASK_TIME_LIMIT),
    }


@shared_task(name="playbooks.run_step", ignore_result=True, **_step_limits())
def run_step(step_run_id: int) -> str:
    from playbooks.engine import execute_step

    return execute_step(step_run_id)


@shared_task(name="playbooks.reconcile_runs", ignore_result=True)
def reconcile_runs() -> dict[str, int]:
    from playbooks.engine import reconcile

    return reconcile()


@shared_task(name="playbooks.cancel_incident_runs", ignore_result=True)
def cancel_incident_runs(incident_id: int, reason: str = "") -> int:
    from playbooks.engine import cancel_incident_runs as cancel

    return cancel(incident_id, reason)
