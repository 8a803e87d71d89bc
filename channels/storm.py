"""Storm control and digests: fewer, better messages when many incidents open at once.

- **Storm.** When more than AIOPS_STORM_THRESHOLD incidents open on one cluster within
  AIOPS_STORM_WINDOW seconds, a `NotificationStorm` row starts. Each target gets one summary
  message naming the count, the namespaces and the likely common cause (the parent incident
  that correlation linked most of them to), rewritten or edited as the storm grows (see
  `channels.threads.revise_message`); until a window passes without a new incident, only critical
  incidents get a message of their own. Counting reads the incidents table, in the ingest's own
  transaction: the database is the truth, and any number of workers agree on it.
- **Digest.** A target with `digest` on gets no info-level message on its own: each becomes a
  `DigestEntry`, and `send_digests` (beat, every AIOPS_DIGEST_INTERVAL seconds) sends one message
  per target listing them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from channels import messages, metrics
from channels.models import ChannelTarget, DigestEntry, NotificationStorm, OutboundMessage
from channels.services import queue_message
from channels.threads import revise_message
from playbooks import unit

log = structlog.get_logger(__name__)


def _open_storm(cluster_id: int | None) -> NotificationStorm | None:
    return NotificationStorm.objects.select_for_update().filter(cluster_id=cluster_id, ended_at__isnull=True).first()


def _recent(incident: Any, since: Any) -> Any:
    """The incidents opened on the incident's cluster since `since`, itself included (the
    (cluster, opened_at) index). An alert batch's incidents are all in the table before the first
    is announced: they count once announced, or announced earlier in this transaction."""
    from playbooks.models import Incident

    # `= %s` or `IS NULL`, not IS NOT DISTINCT FROM: PostgreSQL uses no index for that.
    cluster_id = incident.cluster_id
    same_cluster = Q(cluster_id__isnull=True) if cluster_id is None else Q(cluster_id=cluster_id)
    key = ("storm-noted", cluster_id)
    noted = unit.cached(key)
    noted = [incident.pk] if noted is unit.MISSING else [*noted, incident.pk]
    unit.remember(key, noted)
    return Incident.objects.filter(same_cluster, Q(announce_pending=False) | Q(pk__in=noted), opened_at__gte=since)


def note_opened(incident: Any, *, hold_back: bool = False) -> NotificationStorm | None:
    """Count an opened incident towards its cluster's storm; the storm when one is on. With
    `hold_back` (a non-critical incident that would get a message of its own), an ongoing storm
    also counts it as held back, in the same write."""

    now = incident.opened_at or timezone.now()
    window = timedelta(seconds=settings.AIOPS_STORM_WINDOW)
    # During a storm (when this is hot) one statement: its row, locked -- once per transaction
    # when a batch of incidents is announced in one (playbooks.unit), with one write at its end.
    # The incidents of the window are counted only when no storm is on (it starts above the threshold).
    key = ("storm", incident.cluster_id)
    storm = unit.cached(key)
    if storm is unit.MISSING:  # (None: no storm was on; one another worker starts meets the unique index below)
        storm = _open_storm(incident.cluster_id)
    if storm is not None and storm.last_at < now - window:
        storm.ended_at = storm.last_at
        storm.save(update_fields=["ended_at"])
        log.info("incident_storm_ended", storm=storm.pk, cluster=incident.cluster_id, incidents=storm.incidents,
                 held_back=storm.held_back)
        storm = None
    unit.remember(key, storm)
    if storm is None:
        recent = _recent(incident, now - window)
        count = recent.count()
        if count <= settings.AIOPS_STORM_THRESHOLD:
            return None
        namespaces: dict[str, int] = {}
        causes: dict[str, int] = {}
        for namespace, parent_id in recent.values_list("namespace", "parent_id"):
            namespaces[namespace] = namespaces.get(namespace, 0) + 1
            if parent_id:
                causes[str(parent_id)] = causes.get(str(parent_id), 0) + 1
        first = recent.order_by("opened_at").values_list("opened_at", flat=True).first() or now
        try:
            with transaction.atomic():  # another worker may start this cluster's storm at the same moment
                storm = NotificationStorm.objects.create(cluster_id=incident.cluster_id, started_at=first, last_at=now,
                                                         incidents=count, namespaces=namespaces, causes=causes)
        except IntegrityError:
            storm = _open_storm(incident.cluster_id)
            if storm is None:
                return None
            unit.remember(key, storm)
            _count(storm, incident, now, held=hold_back)
            return storm
        else:
            metrics.STORMS.inc()
            log.warning("incident_storm_started", storm=storm.pk, cluster=incident.cluster_id, incidents=count,
                        window_s=settings.AIOPS_STORM_WINDOW, threshold=settings.AIOPS_STORM_THRESHOLD)
        unit.remember(key, storm)
        _summarize(storm)  # at once: the storm may start outside an ingest (a cluster going unreachable)
        if hold_back:
            held_back(storm, incident)
    else:
        _count(storm, incident, now, held=hold_back)
    return storm


def refresh_summaries(opened_ids: list[int]) -> None:
    """After an ingest: the summary of each storm that grew in it, rendered once."""
    from playbooks.models import Incident

    if not opened_ids:
        return
    clusters = set(Incident.objects.filter(pk__in=opened_ids).values_list("cluster_id", flat=True))
    for current in NotificationStorm.objects.filter(ended_at__isnull=True).select_related("cluster"):
        if current.cluster_id in clusters:
            _summarize(current)


def _count(storm: NotificationStorm, incident: Any, now: Any, *, held: bool = False) -> None:
    storm.incidents += 1
    storm.last_at = max(storm.last_at, now)
    storm.namespaces[incident.namespace] = storm.namespaces.get(incident.namespace, 0) + 1
    if incident.parent_id:
        storm.causes[str(incident.parent_id)] = storm.causes.get(str(incident.parent_id), 0) + 1
    if held:
        _note_held_back(storm, incident)
    unit.write_before_end(("storm", storm.pk), lambda: storm.save(
        update_fields=["incidents", "last_at", "namespaces", "causes", "held_back"]))


def held_back(storm: NotificationStorm, incident: Any) -> None:
    """A non-critical incident during a storm: no message of its own, one more in the summary."""
    _note_held_back(storm, incident)
    storm.save(update_fields=["held_back"])


def _note_held_back(storm: NotificationStorm, incident: Any) -> None:
    storm.held_back += 1
    metrics.STORM_HELD_BACK.inc()
    log.info("incident_message_held_back", storm=storm.pk, incident=incident.pk, severity=incident.severity)


def _targets(storm: NotificationStorm) -> list[ChannelTarget]:
    from channels.receivers import enabled_targets, targets_for

    found: dict[int, ChannelTarget] = {}
    among = enabled_targets()  # once, for every namespace of the storm
    for namespace in storm.namespaces or {"": 0}:
        for target in targets_for(cluster_id=storm.cluster_id, namespace=namespace, severity=None, among=among):
            found.setdefault(target.pk, target)
    return list(found.values())


def summary_text(storm: NotificationStorm) -> str:
    from playbooks.models import Incident

    cause, children = None, 0
    if storm.causes:
        parent_id, children = max(storm.causes.items(), key=lambda item: item[1])
        if children * 2 >= storm.incidents - 1:  # most of the storm hangs off one incident
            cause = Incident.objects.filter(pk=int(parent_id)).select_related("cluster").first()
    cluster_name = storm.cluster.name if storm.cluster_id and storm.cluster else ""
    return messages.storm_summary(storm, cluster_name, cause, children)


def _summarize(storm: NotificationStorm) -> None:
    text = summary_text(storm)
    for target in _targets(storm):
        key = f"storm:{storm.pk}:{target.kind}:{target.address}"[:200]
        sent = OutboundMessage.objects.filter(dedupe_key=key).first()
        if sent is None:
            queue_message(kind=target.kind, address=target.address, text=text, target_id=target.pk, dedupe_key=key)
        else:
            revise_message(sent, text)


def was_held_back(incident: Any) -> bool:
    """True when the incident opened during a storm and got no message of its own."""
    if OutboundMessage.objects.filter(incident_id=incident.pk, dedupe_key__startswith=f"incident_opened:{incident.pk}:").exists():
        return False
    return NotificationStorm.objects.filter(cluster_id=incident.cluster_id, started_at__lte=incident.opened_at,
                                            last_at__gte=incident.opened_at).exists()


# --- digests -----------------------------------------------------------------------------------


def hold_for_digest(target: ChannelTarget, text: str, incident_id: int | None) -> None:
    DigestEntry.objects.create(target=target, text=text, incident_id=incident_id)
    metrics.DIGEST_ENTRIES.inc()
    log.info("digest_entry_held", target=target.name, incident=incident_id)


def send_digests() -> int:
    """One message per target listing its held info-level messages; returns messages queued."""
    queued = 0
    target_ids = DigestEntry.objects.filter(sent_in__isnull=True).values_list("target_id", flat=True).distinct()
    for target_id in sorted(set(target_ids)):
        with transaction.atomic():
            target = ChannelTarget.objects.select_for_update().filter(pk=target_id).first()
            if target is None:
                continue
            entries = list(DigestEntry.objects.select_for_update().filter(target=target, sent_in__isnull=True).order_by("pk"))
            if not entries:
                continue  # another worker sent them a moment ago
            text = messages.digest([e.text for e in entries], entries[0].created_at)
            key = f"digest:{target.pk}:{entries[0].pk}:{entries[-1].pk}"
            message = queue_message(kind=target.kind, address=target.address, text=text, target_id=target.pk,
                                    dedupe_key=key) or OutboundMessage.objects.filter(dedupe_key=key).first()
            if message is not None:
                DigestEntry.objects.filter(pk__in=[e.pk for e in entries]).update(sent_in=message)
                queued += 1
                metrics.DIGESTS_SENT.inc()
                log.info("digest_queued", target=target.name, entries=len(entries), message_id=message.pk)
    return queued
