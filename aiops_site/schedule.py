"""The beat schedule, defined in code. django-celery-beat's DatabaseScheduler copies it into
the database when beat starts (so the admin shows it); the code stays the source of truth."""

from __future__ import annotations


def beat_schedule(poll_interval: int) -> dict[str, dict[str, object]]:
    # Every entry expires before its next run: a backlog after an outage must not replay
    # a burst of stale polls.
    return {}
