"""Celery tasks of silences (thin: ids in, `playbooks.services.silences` does the work).

Each is idempotent: ending a silence is claimed with a conditional update (`swept_at`), and
cancelling a run twice finds it finished."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="playbooks.sweep_silences", ignore_result=True, expires=5)
def sweep_silences() -> dict[str, int]:
    from playbooks.services.silences import sweep

    return sweep()


@shared_task(name="playbooks.end_silence", ignore_result=True)
def end_silence_task(silence_id: int) -> int:
    """Queued for the silence's end (an ETA): the incidents it held are announced on time. The
    beat sweep ends it all the same if this message is lost, and a silence expired early or
    extended is simply not due yet (`end_silence` checks `ends_at` against the clock)."""
    from playbooks.services.silences import end_silence

    return end_silence(silence_id)


@shared_task(name="playbooks.cancel_silenced_runs", ignore_result=True)
def cancel_silenced_runs(incident_ids: list[int], silence_id: int) -> int:
    from playbooks.services.silences import cancel_runs_of

    return cancel_runs_of(list(incident_ids), silence_id)
