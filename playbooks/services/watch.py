"""The `watch` process: watch streams per cluster, one owner per cluster through Redis leases.

Every enabled cluster has a lease, `aiops:watch-lease:<id>`, a Redis lock whose value names the
process holding it and which lives `AIOPS_WATCH_LEASE_TTL` seconds unless renewed. A
`WatchService` scans every second: it renews the leases it holds (stopping a cluster's streams
the moment its lease turns out to be someone else's), takes free leases up to its fair share
(enabled clusters / live watch processes, counted from their heartbeats), and writes each held
cluster's detection mode to its row (`watch` while all six streams are open, `poll` otherwise).
A process that dies (SIGKILL, a lost machine) stops renewing: its leases expire and the other
processes take its clusters over within the TTL plus one scan. Any number of processes may run.

The findings of the workloads an event touched go through `ingest_workload_findings`, the same
open/refresh path and locks as the poll's ingest, so whichever sees a fault first opens the
incident and the other refreshes it. The poll keeps running as the resync: it resolves, and it
catches what a stream missed; when no watcher holds a cluster's lease, beat's fan-out marks the
cluster `poll` (see `playbooks.tasks.watch_clusters`).
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from redis.lock import Lock

from k8s.client import ClusterConfigError, api_client_for
from k8s.detectors import Finding
from k8s.models import Cluster
from k8s.topology import Topology
from k8s.watch_state import Key
from k8s.watcher import ClusterWatcher
from playbooks.services.incidents import ingest_workload_findings

log = structlog.get_logger(__name__)

WATCHERS_KEY = "aiops:watchers"  # sorted set: process identity -> unix time of its last heartbeat
REBALANCE_EVERY_S = 30.0  # a process over its fair share hands back at most one cluster this often


def lease_key(cluster_id: int) -> str:
    return f"aiops:watch-lease:{cluster_id}"


def lease_holder(client: redis.Redis, cluster_id: int) -> str:
    """The identity of the watch process holding this cluster's lease, or "" when none does."""
    value = client.get(lease_key(cluster_id))
    return value.decode() if value else ""


def default_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class _Held:
    cluster_id: int
    name: str
    fingerprint: tuple[Any, ...]
    lease: Lock
    watcher: ClusterWatcher
    renewed_at: float = field(default_factory=time.monotonic)
    lost: bool = False
    mode: str = ""
    error: str = ""


def _fingerprint(cluster: Cluster) -> tuple[Any, ...]:
    return (cluster.kubeconfig_path, cluster.context, cluster.in_cluster, cluster.updated_at)


class WatchService:
    def __init__(self, *, identity: str | None = None, client: redis.Redis | None = None,
                 lease_ttl: float | None = None, window_s: float | None = None, lead_s: float | None = None,
                 scan_s: float = 1.0,
                 watcher_options: dict[str, Any] | None = None) -> None:
        self.identity = identity or default_identity()
        self.redis = client or redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
        self.lease_ttl = float(lease_ttl or settings.AIOPS_WATCH_LEASE_TTL)
        self.window_s = settings.AIOPS_WATCH_WINDOW if window_s is None else window_s
        self.lead_s = settings.AIOPS_WATCH_LEAD if lead_s is None else lead_s
        self.scan_s = scan_s
        self.watcher_options = watcher_options or {}
        self.held: dict[int, _Held] = {}
        self._held_lock = threading.Lock()
        self._last_rebalance = time.monotonic()

    # --- the loop ------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        log.info("watch_service_started", watcher=self.identity, lease_ttl_s=self.lease_ttl, window_s=self.window_s,
                 lead_s=self.lead_s)
        # Leases are renewed on a thread of their own that only talks to Redis: a scan waiting on
        # PostgreSQL (a poll's ingest holding the cluster row) must not let them expire.
        keeper = threading.Thread(target=self._keep_leases, args=(stop,), name="watch-leases", daemon=True)
        keeper.start()
        try:
            while not stop.is_set():
                try:
                    self.step()
                except Exception as exc:  # noqa: BLE001 -- Redis or PostgreSQL away: keep what we hold, retry
                    log.warning("watch_scan_failed", watcher=self.identity, error=f"{type(exc).__name__}: {exc}"[:500])
                    close_old_connections()
                stop.wait(self.scan_s)
        finally:
            keeper.join(5)
            self.shutdown()

    def _keep_leases(self, stop: threading.Event) -> None:
        interval = min(self.scan_s, self.lease_ttl / 4)
        while not stop.wait(interval):
            try:
                self.redis.zadd(WATCHERS_KEY, {self.identity: time.time()})
            except redis.RedisError:
                pass
            self._renew()

    def step(self) -> None:
        now = time.time()
        self.redis.zadd(WATCHERS_KEY, {self.identity: now})
        self.redis.zremrangebyscore(WATCHERS_KEY, 0, now - self.lease_ttl)
        for held in [h for h in list(self.held.values()) if h.lost]:
            self._forget(held)
        close_old_connections()
        clusters = {c.pk: c for c in Cluster.objects.filter(enabled=True).order_by("pk")}
        for cluster_id, held in list(self.held.items()):
            cluster = clusters.get(cluster_id)
            if cluster is None or _fingerprint(cluster) != held.fingerprint:
                self._release(held, reason="cluster disabled, deleted or its credentials changed")
        live = max(1, int(self.redis.zcount(WATCHERS_KEY, now - self.lease_ttl, "+inf")))
        share = math.ceil(len(clusters) / live)
        for cluster in clusters.values():
            if len(self.held) >= share:
                break
            if cluster.pk not in self.held:
                self._try_take(cluster)
        if len(self.held) > share and time.monotonic() - self._last_rebalance > REBALANCE_EVERY_S:
            self._last_rebalance = time.monotonic()
            newest = max(self.held.values(), key=lambda h: h.renewed_at)
            self._release(newest, reason=f"rebalancing: {live} watch processes share {len(clusters)} clusters")
        for held in list(self.held.values()):
            if not held.lost:
                self._sync_mode(held)

    def shutdown(self) -> None:
        for held in list(self.held.values()):
            try:
                self._release(held, reason="watch process stopping")
            except Exception as exc:  # noqa: BLE001 -- the lease expires by itself
                log.warning("watch_release_failed", cluster=held.name, error=f"{type(exc).__name__}: {exc}"[:300])
        try:
            self.redis.zrem(WATCHERS_KEY, self.identity)
        except redis.RedisError:
            pass
        log.info("watch_service_stopped", watcher=self.identity)

    # --- leases --------------------------------------------------------------------------------
    def _try_take(self, cluster: Cluster) -> None:
        lease = self.redis.lock(lease_key(cluster.pk), timeout=self.lease_ttl, blocking=False, thread_local=False)
        if not lease.acquire(token=self.identity):
            return
        try:
            api = api_client_for(cluster)
        except ClusterConfigError as exc:
            self._write_mode(cluster.pk, Cluster.DetectionMode.POLL, str(exc), holder="")
            lease.release()
            return
        watcher = ClusterWatcher(cluster.name, api, on_detect=self._ingester(cluster.pk, cluster.name),
                                 window_s=self.window_s, lead_s=self.lead_s, **self.watcher_options)
        try:
            # Loading the credentials may have taken a while (a first import of the client's API
            # classes, a slow disk): the keeper renews only what is registered, so renew it here.
            lease.reacquire()
        except redis.exceptions.LockError:
            api.close()
            log.warning("watch_lease_lost", cluster=cluster.name, watcher=self.identity, holder=lease_holder(self.redis, cluster.pk))
            return
        with self._held_lock:
            self.held[cluster.pk] = _Held(cluster.pk, cluster.name, _fingerprint(cluster), lease, watcher)
        log.info("watch_lease_taken", cluster=cluster.name, watcher=self.identity)
        watcher.start()

    def _renew(self) -> None:
        for held in [h for h in list(self.held.values()) if not h.lost]:
            try:
                held.lease.reacquire()
                held.renewed_at = time.monotonic()
                continue
            except redis.exceptions.LockNotOwnedError:
                # Expired while we were stalled, maybe taken by another process: its streams are the ones now.
                log.warning("watch_lease_lost", cluster=held.name, watcher=self.identity,
                            holder=lease_holder(self.redis, held.cluster_id))
            except redis.RedisError as exc:
                log.warning("watch_lease_renew_failed", cluster=held.name, error=f"{type(exc).__name__}: {exc}"[:300])
                if time.monotonic() - held.renewed_at <= self.lease_ttl:
                    continue
                # Unrenewed for a whole TTL (Redis unreachable): the lease may be someone else's by now.
                log.warning("watch_lease_expired", cluster=held.name, watcher=self.identity)
            held.lost = True
            threading.Thread(target=held.watcher.stop, name=f"stop-{held.name}", daemon=True).start()

    def _forget(self, held: _Held) -> None:
        with self._held_lock:
            self.held.pop(held.cluster_id, None)

    def _stop_watching(self, held: _Held) -> None:
        self._forget(held)
        held.watcher.stop()

    def _release(self, held: _Held, *, reason: str) -> None:
        self._stop_watching(held)
        self._write_mode(held.cluster_id, Cluster.DetectionMode.POLL, "", holder="", only_if_ours=True)
        try:
            held.lease.release()
        except redis.exceptions.LockError:
            pass  # expired already
        log.info("watch_lease_released", cluster=held.name, watcher=self.identity, reason=reason)

    # --- the cluster row ---------------------------------------------------------------------------
    def _sync_mode(self, held: _Held) -> None:
        mode = Cluster.DetectionMode.WATCH if held.watcher.streaming else Cluster.DetectionMode.POLL
        error = "" if held.watcher.streaming else held.watcher.error
        if (mode, error) != (held.mode, held.error):
            self._write_mode(held.cluster_id, mode, error)
            if mode != held.mode:
                log.info("detection_mode_changed", cluster=held.name, mode=mode, watcher=self.identity, error=error)
            held.mode, held.error = mode, error

    def _write_mode(self, cluster_id: int, mode: str, error: str, *, holder: str | None = None,
                    only_if_ours: bool = False) -> None:
        rows = Cluster.objects.filter(pk=cluster_id)
        if only_if_ours:
            rows = rows.filter(watcher=self.identity)  # a successor may already have written its own
        # One transaction: a reader never sees the new mode with the old error (a row saying
        # `poll` with no reason, as the 410 test once read between the two updates).
        with transaction.atomic():
            rows.exclude(detection_mode=mode).update(detection_mode=mode, detection_mode_since=timezone.now())
            rows.update(watcher=self.identity if holder is None else holder, watch_error=error[:2000])

    def _ingester(self, cluster_id: int, name: str) -> Any:
        def ingest(keys: set[Key], findings: list[Finding], topology: Topology | None = None) -> None:
            try:
                cluster = Cluster.objects.get(pk=cluster_id)
                result = ingest_workload_findings(cluster, keys, findings, topology=topology)
            except Exception:
                connection.close()  # a broken connection must not poison the next pass
                raise
            if result.opened or result.updated:
                log.info("watch_detected", cluster=name, workloads=len(keys), findings=len(findings),
                         opened=result.opened, updated=result.updated)
        return ingest
