"""Incidents an Alertmanager batch opened are announced after the batch commits, not inside it.

Announcing an incident runs its receivers: correlation (is it a child of an open incident?),
silences, the rules and the playbook run, the notification outbox, storm control. That costs
~14 ms an incident on the database, so a batch of 50 alerts opening 50 incidents held its
transaction -- and the sender -- for most of a second. Now the batch only writes the incident
rows, marked `announce_pending`, and its commit enqueues `playbooks.announce_incidents` with
their ids; a worker announces them there, one announcer at a time, in groups of up to 200 per
transaction (one by one when a group cannot be claimed whole).

Nothing is lost and nothing is announced twice:
- Claimed by the announcement's last statement, a conditional update of `announce_pending` on
  rows it locks in id order: an incident another announcer or its resolver took first makes the
  group roll back, so two tasks, or a task and the sweep, announce an incident once.
- A lost task message (broker restart, worker killed) is caught by the sweep
  (`playbooks.announce_incidents` without ids, on beat), which announces what has waited longer
  than `AIOPS_ANNOUNCE_SWEEP_AFTER` seconds.
- An incident resolved before its announcement is announced first, by its resolver in the
  resolving transaction (`announce_resolved`): people see "opened" before "resolved", and the
  engine decides on it as it would have.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from types import SimpleNamespace

import orjson
import structlog
from django.conf import settings
from django.db import DatabaseError, OperationalError, connection, transaction
from django.utils import timezone
from psycopg import errors as psycopg_errors

from playbooks import metrics, unit
from playbooks.models import Incident
from playbooks.rules import rules_read_once
from playbooks.services.correlation import link_alert_incident
from playbooks.services.incidents import announce_ingested, announce_opened

log = structlog.get_logger(__name__)


def announce_after_commit(incident_ids: list[int]) -> None:
    """In the opening transaction: enqueue the announcement of these incidents once it commits."""
    if not incident_ids:
        return
    ids = list(incident_ids)

    def enqueue() -> None:
        from playbooks.tasks import announce_incidents

        try:
            announce_incidents.delay(ids)
        except Exception as exc:  # noqa: BLE001 - the batch is stored; the sweep announces them
            # A broker that is down must not turn a stored batch into a 5xx (Alertmanager would
            # send it again for nothing): beat's sweep announces what this message would have.
            log.warning("incident_announce_not_enqueued", incidents=ids, error=f"{type(exc).__name__}: {exc}"[:300],
                        sweep_after_s=settings.AIOPS_ANNOUNCE_SWEEP_AFTER)

    transaction.on_commit(enqueue)


class _Busy(Exception):
    """The incident's row stayed locked past the announcement's lock timeout: try it again."""


def announce_pending(incident_ids: list[int] | None = None, *, now: datetime | None = None, limit: int = 200) -> list[int]:
    """Announce what is waiting. The task (`incident_ids`: what its batch opened) drains every
    incident waiting, its own and those other batches opened meanwhile; the sweep (None) those
    that waited longer than AIOPS_ANNOUNCE_SWEEP_AFTER. Returns the ids this call announced.

    One announcer at a time (a PostgreSQL advisory lock): a task that finds another draining
    waits for it, then finds its incidents announced. During a storm that makes a few big groups
    of the many small batches, each group in one transaction (one storm row, one commit, one
    claim); a group that fails because a resolver was first or a row stayed busy goes one by one,
    and the busy ones again a moment later."""
    if incident_ids is not None and not incident_ids:
        return []
    now = now or timezone.now()
    path = "task" if incident_ids is not None else "sweep"
    announced: list[int] = []
    with _one_announcer() as held:
        if not held:  # another announcer is stuck: the sweep (and AIOpsIncidentAnnouncementsLate) take over
            log.warning("incident_announcer_busy", incidents=incident_ids)
            return []
        while True:
            pending = Incident.objects.filter(announce_pending=True)
            if path == "sweep":
                pending = pending.filter(opened_at__lt=now - timedelta(seconds=settings.AIOPS_ANNOUNCE_SWEEP_AFTER))
            waiting = list(pending.order_by("pk").values_list("pk", flat=True)[:limit])
            if not waiting:
                break
            done, deferred = _announce(waiting, path)
            announced += done
            if deferred or len(waiting) < limit:
                break  # rows still busy after the retries: the sweep takes them; or nothing more now
    if announced:
        with transaction.atomic():
            # What a batch's own transaction used to send once: the parents whose children grew, storm summaries.
            announce_ingested(None, SimpleNamespace(opened=announced, resolved=[]))
    if path == "sweep" and announced:
        log.warning("incidents_announced_by_sweep", incidents=len(announced), first=announced[0])
    return announced


# Any 64-bit number that no other advisory lock of ours uses: "aiops" "ann" in ASCII.
_ANNOUNCER_LOCK = 0x61696F7073616E6E


@contextlib.contextmanager
def _one_announcer() -> Iterator[bool]:
    """Hold the announcers' lock (waiting up to 60 s for the one that holds it); yields False if
    it could not be had. Session-level: held across the groups' transactions, and released by
    PostgreSQL if the worker dies."""
    with connection.cursor() as cursor:
        try:
            with transaction.atomic():
                cursor.execute("SET LOCAL lock_timeout = '60s'")
                cursor.execute("SELECT pg_advisory_lock(%s)", [_ANNOUNCER_LOCK])
        except OperationalError as exc:
            if not isinstance(exc.__cause__, psycopg_errors.LockNotAvailable):
                raise
            yield False
            return
        try:
            yield True
        finally:
            try:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_ANNOUNCER_LOCK])
            except DatabaseError as exc:  # the connection is gone, and the session's lock with it
                log.warning("incident_announcer_unlock_failed", error=f"{type(exc).__name__}: {exc}"[:300])


def _announce(waiting: list[int], path: str) -> tuple[list[int], list[int]]:
    """Announce these (a group, else one by one); returns (announced, still busy)."""
    announced: list[int] = []
    with rules_read_once():  # one read of the rules (and silences) for the whole list
        if len(waiting) > 1:
            try:
                announced, waiting = _announce_group(waiting, path), []
            except (_Claimed, _Busy):
                log.info("incident_announcement_split", incidents=len(waiting))
        for attempt in range(1, _ATTEMPTS + 1):
            busy = []
            for pk in waiting:
                try:
                    announced += _announce_group([pk], path)
                except _Claimed:
                    pass  # announced by its resolver meanwhile: nothing to do
                except _Busy:
                    busy.append(pk)
            waiting = busy
            if not waiting:
                break
            log.info("incident_announcement_retried", incidents=len(waiting), attempt=attempt)
            time.sleep(0.05 * attempt)
    if waiting:
        log.warning("incident_announcement_deferred", incidents=waiting)
    return announced, waiting


_ATTEMPTS = 5
# The claim is the announcement's last statement: the incidents' rows are locked for it and the
# COMMIT only (in id order, as an alert batch's merge locks them), so a batch merging into one
# waits for that, not for the receivers. The engine's decision (no_run_reason) is written with it.
_CLAIM_SQL = (
    f"WITH locked AS MATERIALIZED (SELECT id FROM {Incident._meta.db_table} "  # noqa: S608 (our table)
    "WHERE id = ANY(%s) AND announce_pending ORDER BY id FOR NO KEY UPDATE) "
    f"UPDATE {Incident._meta.db_table} AS i SET announce_pending = false, "
    "no_run_reason = CASE WHEN v.decided THEN v.reason ELSE i.no_run_reason END "
    "FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, decided boolean, reason jsonb), locked "
    "WHERE i.id = v.id AND locked.id = v.id"
)


def _announce_group(pks: list[int], path: str) -> list[int]:
    """These incidents in one transaction: their receivers, then the claim of all of them. Raises
    _Claimed (all rolled back) when another announcer or a resolver took one first, _Busy when a
    row stayed locked past the lock timeout."""
    try:
        with transaction.atomic():
            # Not locked: the claim at the end locks them. One a resolver announced meanwhile is not
            # read (the claim would then count one row fewer and roll the group back).
            incidents = list(Incident.objects.filter(pk__in=pks, announce_pending=True).order_by("pk"))
            if not incidents:
                raise _Claimed
            with unit.one_transaction():  # rows a receiver locks once for all of them (the storm's)
                announced = [incident for incident in incidents if _announce_claimed(incident, path, announcing=True)]
            rows = [{"id": i.pk, "decided": getattr(i, "no_run_decided", False), "reason": i.no_run_reason}
                    for i in incidents]  # a closed one (announced by its resolver) only loses its flag
            with connection.cursor() as cursor:
                # A writer that holds a row longer than a batch's merge does (a resolver, which
                # may wait for a row this transaction holds): give way, roll back, try again.
                cursor.execute("SET LOCAL lock_timeout = '200ms'")
                cursor.execute(_CLAIM_SQL, [[i.pk for i in incidents], orjson.dumps(rows).decode()])
                if cursor.rowcount != len(incidents):
                    raise _Claimed
    except OperationalError as exc:
        if isinstance(exc.__cause__, (psycopg_errors.LockNotAvailable, psycopg_errors.DeadlockDetected)):
            raise _Busy from exc
        raise
    for incident in announced:
        _observe_delay(incident, path)
    return [incident.pk for incident in announced]


class _Claimed(Exception):
    """Another announcer, or the incident's resolver, announced it first."""


def announce_before_resolving(incident: Incident) -> None:
    """The resolver's part (the caller holds the row's lock): an incident that was never
    announced is announced now, so its opening comes before its resolution everywhere."""
    if incident.announce_pending and Incident.objects.filter(pk=incident.pk, announce_pending=True).update(
            announce_pending=False):
        incident.announce_pending = False
        _announce_claimed(incident, "resolve", announcing=False)
        _observe_delay(incident, "resolve")


def _observe_delay(incident: Incident, path: str) -> None:
    metrics.ANNOUNCE_DELAY.labels(path).observe(max(0.0, (timezone.now() - incident.opened_at).total_seconds()))


def _announce_claimed(incident: Incident, path: str, *, announcing: bool) -> bool:
    """Run one incident's receivers. False if it is closed already (its resolver announced it).
    `announcing`: the engine leaves its decision on the object for the claim to write."""
    if path != "resolve" and not incident.is_open:
        return False
    incident.announcing = announcing
    link_alert_incident(incident)  # a child of the open incident it names a pod or node of
    announce_opened(incident)
    return True
