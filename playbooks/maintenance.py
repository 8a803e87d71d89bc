"""Maintenance windows: when one is on, and which one covers an incident's cluster and namespace.

A window starts at each time its cron expression names, in its own time zone (so "0 2 * * 6" in
Europe/Berlin stays 02:00 local across daylight saving), and lasts `duration_minutes`. Whether it
is on is computed from the cron expression and `now`, never stored: the database row and the clock
are the truth, and a beat that is late changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadCronError, CroniterBadDateError, croniter
from django.db.models import Q
from django.utils import timezone


@dataclass(frozen=True)
class Period:
    window: Any  # playbooks.MaintenanceWindow
    start: datetime
    end: datetime

    def scope(self) -> str:
        return scope_words(self.window)


def schedule_error(expression: str) -> str | None:
    """None when `expression` is a five-field cron expression croniter can iterate, else why not."""
    expression = (expression or "").strip()
    if len(expression.split()) != 5:
        return f"{expression!r} is not a cron expression of five fields (minute hour day month weekday), e.g. '0 2 * * 6'"
    try:
        croniter(expression)
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        return f"{expression!r} is not a valid cron expression: {exc}"
    return None


def zone_error(name: str) -> str | None:
    if not name:
        return "give a time zone, e.g. UTC or Europe/Berlin"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not a known time zone (an IANA name such as UTC or Europe/Berlin)"
    if name not in available_timezones() and name != "UTC":
        return f"{name!r} is not a known time zone (an IANA name such as UTC or Europe/Berlin)"
    return None


def current_period(window: Any, now: datetime | None = None) -> Period | None:
    """The period of `window` that contains `now`, or None."""
    now = now or timezone.now()
    zone = ZoneInfo(window.time_zone or "UTC")
    local = now.astimezone(zone)
    try:
        # The latest start at or before now (croniter's get_prev is strictly before its base).
        start = croniter(window.schedule, local + timedelta(seconds=1)).get_prev(datetime)
    except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError):
        return None
    end = start + window.duration
    if start <= local < end:
        return Period(window, start, end)
    return None


def next_period(window: Any, now: datetime | None = None) -> Period | None:
    """The period on now, else the next one to start."""
    now = now or timezone.now()
    found = current_period(window, now)
    if found is not None:
        return found
    try:
        start = croniter(window.schedule, now.astimezone(ZoneInfo(window.time_zone or "UTC"))).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError):
        return None
    return Period(window, start, start + window.duration)


def windows_covering(cluster_id: int | None, namespace: str) -> Any:
    from playbooks.models import MaintenanceWindow

    found = MaintenanceWindow.objects.filter(enabled=True).filter(Q(cluster__isnull=True) | Q(cluster_id=cluster_id))
    return found.filter(Q(namespace="") | Q(namespace=namespace or ""))


def active_period(cluster_id: int | None, namespace: str, now: datetime | None = None) -> Period | None:
    """The maintenance period on now for this cluster and namespace (the one ending last), or None."""
    now = now or timezone.now()
    periods = [p for w in windows_covering(cluster_id, namespace) if (p := current_period(w, now)) is not None]
    return max(periods, key=lambda p: p.end, default=None)


def scope_words(window: Any) -> str:
    cluster = f"cluster {window.cluster.name}" if window.cluster_id else "every cluster"
    return f"namespace {window.namespace} in {cluster}" if window.namespace else cluster


def end_words(period: Period) -> str:
    """`14:00 Europe/Berlin` (and the date when not today there)."""
    end, zone = period.end, period.window.time_zone or "UTC"
    today = timezone.now().astimezone(ZoneInfo(zone)).date()
    day = "" if end.date() == today else f"{end:%b} {end.day} "
    return f"{day}{end:%H:%M} {zone}"
