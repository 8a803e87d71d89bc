"""Watch-loop tasks: beat's `playbooks.watch_clusters` fans out one `playbooks.poll_cluster` per
enabled cluster that is due. Both are thin: the work is in `playbooks.services.poll`."""

from __future__ import annotations

import time
from functools import cache

import redis
import structlog
from celery import shared_task
from django.conf import settings
from django.utils import timezone

from k8s.models import Cluster
from playbooks import metrics
from playbooks.services.poll import backoff_seconds, poll
from playbooks.services.watch import lease_key

log = structlog.get_logger(__name__)


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def poll_lock_key(cluster_id: int) -> str:
    return f"aiops:poll-lock:{cluster_id}"


def _due(cluster: Cluster, now_ts: float) -> bool:
    if cluster.last_poll_at is None:
        return True
    wait = max(float(cluster.effective_poll_interval()), backoff_seconds(cluster))
    # Beat's own jitter must not make a cluster with the default interval skip every other beat.
    slack = settings.AIOPS_POLL_INTERVAL / 2
    return now_ts - cluster.last_poll_at.timestamp() + slack >= wait


@shared_task(name="playbooks.watch_clusters", ignore_result=True)
def watch_clusters() -> list[int]:
    """Enqueue a poll of every enabled cluster that is due (its interval, or its back-off, passed)."""
    now_ts = timezone.now().timestamp()
    queued = []
    _expire_dead_watchers()
    for cluster in Cluster.objects.filter(enabled=True).only(
        "id", "name", "poll_interval", "last_poll_at", "consecutive_failures"
    ):
        if not _due(cluster, now_ts):
            if cluster.consecutive_failures:
                metrics.POLLS.labels(cluster.name, "skipped_backoff").inc()
                log.info("poll_backing_off", cluster=cluster.name, failures=cluster.consecutive_failures,
                         wait_s=backoff_seconds(cluster))
            continue
        # Expires: a poll that waited in the queue past its interval is stale; the next beat sends a fresh one.
        poll_cluster.apply_async(args=[cluster.pk], expires=cluster.effective_poll_interval())
        queued.append(cluster.pk)
    return queued


def _expire_dead_watchers() -> None:
    """A cluster whose row says `watch` but whose lease no process holds (its watcher was killed,
    or none runs) is detected by the poll alone: say so on the row."""
    for cluster in Cluster.objects.filter(detection_mode=Cluster.DetectionMode.WATCH).only("id", "name", "watcher"):
        if not _redis().exists(lease_key(cluster.pk)):
            Cluster.objects.filter(pk=cluster.pk, watcher=cluster.watcher).update(
                detection_mode=Cluster.DetectionMode.POLL, detection_mode_since=timezone.now(), watcher="",
                watch_error="no watch process holds this cluster's lease")
            log.warning("detection_mode_changed", cluster=cluster.name, mode="poll", reason="lease expired",
                        watcher=cluster.watcher)


@shared_task(name="playbooks.poll_cluster", ignore_result=True)
def poll_cluster(cluster_id: int) -> str:
    """Poll one cluster under its Redis lock; a poll still running means this one is skipped."""
    cluster = Cluster.objects.filter(pk=cluster_id, enabled=True).first()
    if cluster is None:
        log.info("poll_not_needed", cluster_id=cluster_id, reason="cluster missing or disabled")
        return "missing"
    # The lock outlives a hung poll only until the hard time limit kills it.
    lock = _redis().lock(poll_lock_key(cluster_id), timeout=settings.CELERY_TASK_TIME_LIMIT + 5, blocking=False)
    if not lock.acquire():
        metrics.POLLS.labels(cluster.name, "skipped_locked").inc()
        log.warning("poll_skipped", cluster=cluster.name, reason="the previous poll of this cluster is still running")
        return "skipped"
    started = time.monotonic()
    try:
        outcome = poll(cluster)
    except Exception:
        metrics.POLLS.labels(cluster.name, "error").inc()
        log.exception("poll_failed", cluster=cluster.name, seconds=round(time.monotonic() - started, 3))
        raise
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            log.warning("poll_lock_lost", cluster=cluster.name)  # expired while we ran: the poll took too long
    return outcome.outcome


@shared_task(name="playbooks.announce_incidents", ignore_result=True)
def announce_incidents(incident_ids: list[int] | None = None) -> int:
    """Announce the incidents an alert batch opened (its commit sends their ids), or, from beat
    without ids, every one still waiting past AIOPS_ANNOUNCE_SWEEP_AFTER (a lost message)."""
    from playbooks.services.announce import announce_pending

    return len(announce_pending(incident_ids))
