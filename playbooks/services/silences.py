"""Silences at work: creating and expiring them, holding back the incidents they match, and
announcing those incidents when the silence ends.

- `hold_if_silenced(incident)`: called by `announce_opened` inside the ingest's transaction; a
  matching active silence takes the incident (`silenced_by`, a timeline line, the why-no-run
  reason) and `incident_opened` is not sent: no notification, no run.
- `create_silence(...)`: validates, stores, and applies an active silence to the incidents already
  open (their active runs are cancelled after commit; a rule runs anew when the silence ends).
- `sweep(now)` (beat every few seconds, and a task queued for each silence's end): applies
  silences whose start came, and ends silences whose end came: each incident they held that is
  still open is announced as if it had just opened (unless another silence matches it).

Lock order as the ingest's: the cluster's row, then the incident's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from django.db import transaction
from django.utils import timezone

from playbooks import metrics_quiet as metrics
from playbooks.models import ClusterEvent, Incident, Silence
from playbooks.rules import read_once
from playbooks.silences import (
    MatcherError,
    incident_values,
    matchers_text,
    matches,
    parse_matchers,
    when_words,
)

log = structlog.get_logger(__name__)

MAX_REASON = 1000


class SilenceRefused(Exception):
    """Bad input or no right to do it; the message is for the person. `code`: forbidden, not_found,
    conflict or invalid (then `field` names the input at fault), for the API's status codes."""

    def __init__(self, message: str, code: str = "invalid", field: str = "") -> None:
        super().__init__(message)
        self.code, self.field = code, field


def active_silences(now: datetime) -> list[Silence]:
    return list(Silence.objects.filter(Silence.active_q(now)).order_by("-ends_at", "pk"))


def silence_for(incident: Any, now: datetime | None = None, silences: list[Silence] | None = None) -> Silence | None:
    """The active silence matching `incident` that ends last, or None."""
    now = now or timezone.now()
    # Read once for a batch of announcements (each candidate is checked against `now` below).
    candidates = read_once("silences", lambda: active_silences(now)) if silences is None else silences
    if not candidates:
        return None
    values = incident_values(incident)
    return next((s for s in candidates if s.is_active(now) and matches(s.matchers, values)), None)


def active_silence_of(incident: Any, now: datetime | None = None) -> Silence | None:
    """The silence holding this incident now (read from the database), or None."""
    now = now or timezone.now()
    silence_id = Incident.objects.filter(pk=incident.pk).values_list("silenced_by_id", flat=True).first()
    if silence_id is None:
        return None
    return Silence.objects.filter(Silence.active_q(now), pk=silence_id).first()


def silence_line(silence: Silence, now: datetime | None = None) -> str:
    """`silenced by #12 until 14:00 UTC (upgrade; web:alice)` -- how every surface says it."""
    who = f"; {silence.created_by_name}" if silence.created_by_name else ""
    return f"silenced by #{silence.pk} until {when_words(silence.ends_at, now)} ({silence.reason}{who})"


def _take(incident: Incident, silence: Silence, now: datetime, *, when: str) -> None:
    """Mark the incident held by `silence`: its row, a timeline line, why nothing runs."""
    incident.silenced_by = silence
    line = silence_line(silence, now)
    incident.no_run_reason = {"code": "silenced", "silence": silence.pk, "until": silence.ends_at.isoformat(),
                              "text": f"{line}: no notification and no run until it ends"}
    Incident.objects.filter(pk=incident.pk).update(silenced_by=silence, no_run_reason=incident.no_run_reason)
    ClusterEvent.objects.create(
        cluster_id=incident.cluster_id, incident=incident, kind=ClusterEvent.Kind.SILENCED,
        finding_type=incident.primary_type, alertname=incident.alertname, workload_kind=incident.workload_kind,
        namespace=incident.namespace, workload_name=incident.workload_name, severity=incident.severity,
        message=line[0].upper() + line[1:], data={"silence": silence.pk, "until": silence.ends_at.isoformat()},
    )
    metrics.INCIDENTS_SILENCED.labels(when).inc()
    log.info("incident_silenced", incident=incident.pk, silence=silence.pk, until=silence.ends_at.isoformat(),
             when=when, workload=incident.workload_key)


def hold_if_silenced(incident: Incident, now: datetime | None = None) -> bool:
    """In the transaction that opened `incident`: True when a silence takes it (then nobody is told
    and no rule runs until the silence ends)."""
    now = now or timezone.now()
    silence = silence_for(incident, now)
    if silence is None:
        return False
    _take(incident, silence, now, when="opened")
    return True


# --- creating and expiring -------------------------------------------------------------------


def may_silence(user: Any) -> bool:
    """Silencing holds back remediation: the approvers (and superusers) may, as they may close an
    incident. The admin checks its own model permissions instead."""
    from django.conf import settings

    return bool(user is not None and user.is_active
                and (user.is_superuser or user.groups.filter(name=settings.AIOPS_APPROVER_GROUP).exists()))


def _audit(who: str, outcome: str, detail: str, **arguments: Any) -> None:
    from agents.models import AuditEntry

    AuditEntry.objects.create(actor=who[:200], action=AuditEntry.Action.CONFIG_CHANGE, outcome=outcome,
                              detail=detail[:4000], reason=detail[:500], arguments=arguments)


def _check_right(user: Any, via: str, who: str, what: str) -> None:
    if via == "admin" or may_silence(user):
        return
    name = user.get_username() if user is not None else "an unknown user"
    message = f"{name} may not {what}: only approvers can"
    _audit(who, "refused", message)
    log.info("silence_refused", by=who, reason=message)
    raise SilenceRefused(message, "forbidden")


def create_silence(*, matchers_input: Any, duration: timedelta | None = None, ends_at: datetime | None = None,
                   starts_at: datetime | None = None, reason: str, user: Any = None, via: str) -> Silence:
    """Store a silence and apply it now if it is active. Raises SilenceRefused naming the bad input."""
    now = timezone.now()
    who = f"{via}:{user.get_username()}" if user is not None else via
    _check_right(user, via, who, "create silences")
    try:
        parsed = parse_matchers(matchers_input)
    except MatcherError as exc:
        raise SilenceRefused(str(exc), field="matchers") from exc
    reason = (reason or "").strip()
    if not reason:
        raise SilenceRefused("say why: a silence needs a reason", field="reason")
    if len(reason) > MAX_REASON:
        raise SilenceRefused(f"the reason is longer than {MAX_REASON} characters", field="reason")
    starts_at = starts_at or now
    if ends_at is None:
        if duration is None:
            raise SilenceRefused("give a duration or an end", field="duration")
        ends_at = starts_at + duration
    if ends_at <= now:
        raise SilenceRefused("the end is in the past", field="ends_at")
    if ends_at <= starts_at:
        raise SilenceRefused("the end must be after the start", field="ends_at")
    silence = Silence.objects.create(matchers=[m.as_dict() for m in parsed], starts_at=starts_at, ends_at=ends_at,
                                     reason=reason, created_by=user, created_by_name=who[:150])
    _audit(who, "ok", f"silence #{silence.pk} created until {ends_at.isoformat()}: {matchers_text(silence.matchers)} "
                      f"({reason})", silence=silence.pk)
    metrics.SILENCES_CHANGED.labels("created", via.split(" ", 1)[0]).inc()
    log.info("silence_created", silence=silence.pk, matchers=matchers_text(silence.matchers), by=who,
             starts_at=starts_at.isoformat(), ends_at=ends_at.isoformat(), reason=reason[:300])
    if silence.starts_at <= now:
        apply_silence(silence, now)
    _schedule_end(silence)
    return silence


def expire_silence(silence_id: int, *, user: Any = None, via: str) -> Silence:
    """End a silence now; the incidents it held that are still open are announced at once."""
    now = timezone.now()
    who = f"{via}:{user.get_username()}" if user is not None else via
    _check_right(user, via, who, "expire silences")
    with transaction.atomic():
        silence = Silence.objects.select_for_update().filter(pk=silence_id).first()
        if silence is None:
            raise SilenceRefused(f"there is no silence #{silence_id}", "not_found")
        if silence.ends_at <= now:
            raise SilenceRefused(f"silence #{silence_id} already ended at {when_words(silence.ends_at, now)}", "conflict")
        silence.ends_at = max(now, silence.starts_at + timedelta(microseconds=1))
        silence.expired_by = who[:150]
        silence.save(update_fields=["ends_at", "expired_by"])
    _audit(who, "ok", f"silence #{silence.pk} expired early", silence=silence.pk)
    metrics.SILENCES_CHANGED.labels("expired", via.split(" ", 1)[0]).inc()
    log.info("silence_expired", silence=silence.pk, by=who)
    end_silence(silence.pk, timezone.now())
    return silence


def _schedule_end(silence: Silence) -> None:
    """The end is exact: a task at `ends_at` (the beat sweep catches it if the broker lost it)."""
    from playbooks.tasks_quiet import end_silence_task

    silence_id, eta = silence.pk, silence.ends_at
    transaction.on_commit(lambda: end_silence_task.apply_async((silence_id,), eta=eta), robust=True)


# --- applying and ending ---------------------------------------------------------------------


def apply_silence(silence: Silence, now: datetime) -> list[int]:
    """A silence that just started takes the open incidents it matches (ones already held by a
    silence ending later stay with it). Their active runs are cancelled after commit."""
    if not Silence.objects.filter(pk=silence.pk, applied_at__isnull=True).update(applied_at=now):
        return []
    taken = []
    for incident in Incident.objects.select_related("cluster").filter(state=Incident.State.OPEN).order_by("pk"):
        if not matches(silence.matchers, incident_values(incident)):
            continue
        with transaction.atomic():
            locked = Incident.objects.select_for_update(no_key=True, of=("self",)).select_related("silenced_by").filter(
                pk=incident.pk, state=Incident.State.OPEN).first()
            if locked is None:
                continue
            holder = locked.silenced_by
            if holder is not None and holder.is_active(now) and holder.ends_at >= silence.ends_at:
                continue
            _take(locked, silence, now, when="applied")
            taken.append(locked.pk)
    if taken:
        from playbooks.tasks_quiet import cancel_silenced_runs

        silence_id = silence.pk
        transaction.on_commit(lambda: cancel_silenced_runs.delay(taken, silence_id), robust=True)
    return taken


def cancel_runs_of(incident_ids: list[int], silence_id: int) -> int:
    """Runs of incidents a silence took are cancelled (their pending approvals with them): the rule
    runs anew if the incident is still open when the silence ends."""
    from playbooks.engine import cancel_run
    from playbooks.models import PlaybookRun

    cancelled = 0
    for run_id in PlaybookRun.objects.filter(incident_id__in=incident_ids).exclude(state="finished").values_list(
            "pk", flat=True):
        cancelled += int(cancel_run(run_id, by=f"silence #{silence_id}"))
    if cancelled:
        log.info("silenced_runs_cancelled", silence=silence_id, runs=cancelled)
    return cancelled


def end_silence(silence_id: int, now: datetime | None = None) -> int:
    """The silence ended: announce each incident it held that is still open (claimed once: a
    redelivered task or a second sweeper finds `swept_at` set and does nothing)."""
    now = now or timezone.now()
    if not Silence.objects.filter(pk=silence_id, ends_at__lte=now, swept_at__isnull=True).update(swept_at=now):
        return 0
    silence = Silence.objects.get(pk=silence_id)
    others = active_silences(now)
    announced = 0
    for incident_id, cluster_id in Incident.objects.filter(silenced_by_id=silence_id, state=Incident.State.OPEN) \
            .order_by("pk").values_list("pk", "cluster_id"):
        with transaction.atomic():
            if cluster_id is not None:
                from k8s.models import Cluster

                Cluster.objects.select_for_update(no_key=True).filter(pk=cluster_id).first()
            incident = Incident.objects.select_for_update(no_key=True, of=("self",)).select_related("cluster").filter(
                pk=incident_id, state=Incident.State.OPEN, silenced_by_id=silence_id).first()
            if incident is None:
                continue
            announced += int(_release(incident, silence, others, now))
    log.info("silence_ended", silence=silence_id, released=announced, expired_by=silence.expired_by or None)
    return announced


def _release(incident: Incident, silence: Silence, others: list[Silence], now: datetime) -> bool:
    from playbooks.services.incidents import announce_opened

    other = silence_for(incident, now, others)
    if other is not None:
        metrics.SILENCE_ENDS.labels("still_silenced").inc()
        _take(incident, other, now, when="applied")
        return False
    incident.silenced_by = None
    incident.no_run_reason = None
    Incident.objects.filter(pk=incident.pk).update(silenced_by=None, no_run_reason=None)
    ended = "expired early by " + silence.expired_by if silence.expired_by else "ended"
    ClusterEvent.objects.create(
        cluster_id=incident.cluster_id, incident=incident, kind=ClusterEvent.Kind.SILENCE_ENDED,
        finding_type=incident.primary_type, alertname=incident.alertname, workload_kind=incident.workload_kind,
        namespace=incident.namespace, workload_name=incident.workload_name, severity=incident.severity,
        message=f"Silence #{silence.pk} {ended}; still failing: announced, and its rule runs as if it had just opened",
        data={"silence": silence.pk},
    )
    metrics.SILENCE_ENDS.labels("announced").inc()
    announce_opened(incident, again=f"silence-{silence.pk}",
                    note=f"🔔 Silence #{silence.pk} {ended} and this is still failing.")
    return True


def sweep(now: datetime | None = None) -> dict[str, int]:
    """Apply silences whose start came; end those whose end came. Idempotent."""
    now = now or timezone.now()
    counts = {"applied": 0, "ended": 0}
    for silence in Silence.objects.filter(applied_at__isnull=True, starts_at__lte=now, ends_at__gt=now)[:100]:
        apply_silence(silence, now)
        counts["applied"] += 1
    for silence_id in Silence.objects.filter(ends_at__lte=now, swept_at__isnull=True).values_list("pk", flat=True)[:100]:
        end_silence(silence_id, now)
        counts["ended"] += 1
    if any(counts.values()):
        log.info("silences_swept", **counts)
    return counts


def silence_rows(*, include_ended_hours: int = 24, now: datetime | None = None) -> list[dict[str, Any]]:
    """Silences for the console and chat: active and pending ones, and those ended lately."""
    now = now or timezone.now()
    since = now - timedelta(hours=include_ended_hours)
    rows = []
    for silence in Silence.objects.filter(ends_at__gte=since).order_by("ends_at", "pk")[:200]:
        rows.append({"silence": silence, "matchers": matchers_text(silence.matchers), "state": silence.state,
                     "until": when_words(silence.ends_at, now), "from": when_words(silence.starts_at, now),
                     "held": silence.incidents.filter(state=Incident.State.OPEN).count()})
    order = {"active": 0, "pending": 1, "expired": 2}
    return sorted(rows, key=lambda r: (order[r["state"]], r["silence"].ends_at))
