"""Celery tasks of the engine. Thin: they take ids and call `playbooks.engine`.

Task names are stable API. `acks_late` (the app default) is what makes a killed worker's step
run again; the StepRun claim (a conditional update) is what makes running it again safe.
"""

from __future__ import annotations

import structlog
from celery import shared_task

log = structlog.get_logger(__name__)


@shared_task(name="playbooks.run_step", ignore_result=True)
def run_step(step_run_id: int) -> str:
    from playbooks.engine import execute_step

    return execute_step(step_run_id)


@shared_task(name="playbooks.reconcile_runs", ignore_result=True)
def reconcile_runs() -> dict[str, int]:
    from playbooks.engine import reconcile

    return reconcile()
