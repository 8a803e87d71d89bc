"""The cluster poll: list six kinds as raw JSON, run the detectors, ingest the findings.

The poll is the hot path (10k pods is ~13 MB of JSON): lists are fetched as raw JSON
(`k8s.listing`: no model deserialisation, paginated, orjson). Detection streams:
ReplicaSets and Jobs (what owner resolution needs) are read first and kept, cut down to the
fields the detectors read; every other kind goes through its detector one page at a time and is
dropped, so the process never holds the cluster's pods at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog
from django.conf import settings
from kubernetes import client as k8s_client

from k8s.client import ClusterConfigError, api_client_for
from k8s.detectors import (
    Finding,
    OwnerIndex,
    detect_deployments,
    detect_hpas,
    detect_jobs,
    detect_nodes,
    detect_pods,
    replicasets_by_deployment,
)
from k8s.listing import KINDS, PAGE_SIZE, fetch_raw_pages, list_calls  # noqa: F401  (KINDS: part of this module's API)
from k8s.models import Cluster
from k8s.slim import SLIMMERS
from k8s.topology import Topology
from playbooks import metrics
from playbooks.services.incidents import IngestResult, ingest_findings, record_poll_failure, record_poll_success

log = structlog.get_logger(__name__)


class PollError(Exception):
    """The cluster could not be listed (unreachable, refused credentials, a 5xx)."""


def scan_cluster(api: k8s_client.ApiClient, *, page_size: int = PAGE_SIZE,
                 topology: Topology | None = None) -> tuple[list[Finding], dict[str, int]]:
    """Run every detector over the cluster, streaming pages; returns findings and object counts.

    `topology`, when given, learns which nodes are not ready and where each workload's failing
    pods run (what correlation links incidents by), from the same pages."""
    calls = list_calls(api)
    counts: dict[str, int] = {}

    def pages(kind: str, slim: bool = False) -> Any:
        counts[kind] = 0
        for body in fetch_raw_pages(calls[kind], page_size=page_size):
            items = body.get("items") or []
            counts[kind] += len(items)
            yield [SLIMMERS[kind](item) for item in items] if slim else items

    replicasets = [rs for page in pages("replicasets", slim=True) for rs in page]
    jobs = [job for page in pages("jobs", slim=True) for job in page]
    owners = OwnerIndex(replicasets, jobs)
    rs_by_deployment = replicasets_by_deployment(replicasets)
    findings: list[Finding] = []
    for page in pages("nodes"):
        findings.extend(detect_nodes(page))
        if topology is not None:
            topology.add_nodes(page)
    for page in pages("deployments"):
        findings.extend(detect_deployments(page, rs_by_deployment))
        # Pod findings carry their Deployment's labels (rule label selectors match workloads).
        for deployment in page:
            owners.add_workload(deployment, "Deployment")
    for page in pages("hpas"):
        findings.extend(detect_hpas(page, owners))
    findings.extend(detect_jobs(jobs, owners))
    for page in pages("pods"):
        findings.extend(detect_pods(page, owners))
        if topology is not None:
            topology.add_pods(page, owners.owner_of_pod)
    return findings, counts


@dataclass
class PollOutcome:
    outcome: str  # "ok" | "unreachable"
    seconds: float
    findings: int = 0
    ingest: IngestResult | None = None
    error: str = ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, k8s_client.ApiException):
        return f"API answered {exc.status} {exc.reason}".strip()
    return f"{type(exc).__name__}: {exc}"


# One ApiClient per cluster per worker process, reused across polls: its connection pool keeps
# the TLS connection to the API server alive instead of a handshake (and a kubeconfig parse) every
# poll. Rebuilt when the cluster's credentials change, after a failed poll, and every few minutes
# so rotated tokens and certificates are picked up.
_CLIENT_TTL_S = 300.0
_clients: dict[int, tuple[tuple[Any, ...], float, k8s_client.ApiClient]] = {}


def _client_for(cluster: Cluster) -> k8s_client.ApiClient:
    identity = (cluster.kubeconfig_path, cluster.context, cluster.in_cluster, cluster.updated_at)
    cached = _clients.get(cluster.pk)
    if cached and cached[0] == identity and time.monotonic() - cached[1] < _CLIENT_TTL_S:
        return cached[2]
    _drop_client(cluster.pk)
    api = api_client_for(cluster)
    _clients[cluster.pk] = (identity, time.monotonic(), api)
    return api


def _drop_client(cluster_id: int) -> None:
    cached = _clients.pop(cluster_id, None)
    if cached:
        cached[2].close()


def poll(cluster: Cluster) -> PollOutcome:
    """Poll one cluster once (the caller holds its poll lock)."""
    started = time.monotonic()
    try:
        api = _client_for(cluster)
    except ClusterConfigError as exc:
        return _failed(cluster, started, str(exc))
    try:
        topology = Topology()
        findings, counts = scan_cluster(api, topology=topology)
    except Exception as exc:  # noqa: BLE001 -- any failure to list is "unreachable": counted, backed off, reported
        _drop_client(cluster.pk)
        return _failed(cluster, started, _describe(exc))
    scanned = time.monotonic()
    record_poll_success(cluster)
    result = ingest_findings(cluster, findings, topology=topology)
    seconds = time.monotonic() - started
    for kind, count in counts.items():
        metrics.POLL_OBJECTS.labels(cluster.name, kind).set(count)
    metrics.POLL_DURATION.labels(cluster.name).observe(seconds)
    metrics.POLLS.labels(cluster.name, "ok").inc()
    log.info("cluster_polled", cluster=cluster.name, seconds=round(seconds, 3), scan_seconds=round(scanned - started, 3),
             objects=counts, findings=len(findings), opened=len(result.opened),
             updated=len(result.updated), resolved=len(result.resolved))
    interval = cluster.effective_poll_interval()
    if seconds > interval:
        log.warning("poll_slower_than_interval", cluster=cluster.name, seconds=round(seconds, 3), interval=interval)
    return PollOutcome("ok", seconds, len(findings), result)


def _failed(cluster: Cluster, started: float, error: str) -> PollOutcome:
    record_poll_failure(cluster, error)
    metrics.POLLS.labels(cluster.name, "unreachable").inc()
    return PollOutcome("unreachable", time.monotonic() - started, error=error)


def backoff_seconds(cluster: Cluster) -> float:
    """How long after a failed poll the next one waits: doubling from the interval, capped."""
    if not cluster.consecutive_failures:
        return 0.0
    interval = cluster.effective_poll_interval()
    cap = max(interval, settings.AIOPS_POLL_BACKOFF_MAX)
    return float(min(interval * 2 ** (cluster.consecutive_failures - 1), cap))
