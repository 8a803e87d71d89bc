"""The cluster poll: list six kinds as raw JSON, run the detectors, ingest the findings.

The poll is the hot path (10k pods is ~13 MB of JSON): lists are fetched with
``_preload_content=False`` (no model deserialisation, ~8x cheaper), paginated with
``limit``/``continue`` so no single response is huge, parsed with orjson, and each item is
cut down at once to the fields the detectors read (managedFields, env, volumes... go), so the
process holds one page of full objects at a time and never the whole cluster's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from django.conf import settings
from kubernetes import client as k8s_client

from k8s.client import ClusterConfigError, api_client_for
from k8s.detectors import detect
from k8s.models import Cluster
from playbooks import metrics
from playbooks.services.incidents import IngestResult, ingest_findings, record_poll_failure, record_poll_success

log = structlog.get_logger(__name__)

PAGE_SIZE = 500  # kubectl's chunk size: bounded responses, few round trips
KINDS = ("pods", "nodes", "deployments", "replicasets", "hpas", "jobs")


class PollError(Exception):
    """The cluster could not be listed (unreachable, refused credentials, a 5xx)."""


def _pick(obj: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: obj[key] for key in keys if key in obj}


_META_KEYS = ("name", "namespace", "ownerReferences", "creationTimestamp", "deletionTimestamp")
_CONTAINER_KEYS = ("name", "image", "readinessProbe", "livenessProbe")


def _slim_meta(meta: dict[str, Any], annotation: str | None = None, label: str | None = None) -> dict[str, Any]:
    slim = _pick(meta, _META_KEYS)
    if label and label in (meta.get("labels") or {}):
        slim["labels"] = {label: meta["labels"][label]}
    if annotation and annotation in (meta.get("annotations") or {}):
        slim["annotations"] = {annotation: meta["annotations"][annotation]}
    return slim


def _slim_container(container: dict[str, Any]) -> dict[str, Any]:
    slim = _pick(container, _CONTAINER_KEYS)
    memory = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    if memory:
        slim["resources"] = {"limits": {"memory": memory}}
    return slim


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod.get("spec") or {}
    return {
        "metadata": _slim_meta(pod.get("metadata") or {}, label="pod-template-hash"),
        "spec": {
            **_pick(spec, ("nodeName", "restartPolicy")),
            "containers": [_slim_container(c) for c in spec.get("containers") or []],
            "initContainers": [_slim_container(c) for c in spec.get("initContainers") or []],
        },
        "status": pod.get("status") or {},
    }


REVISION = "deployment.kubernetes.io/revision"
SLIMMERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "pods": slim_pod,
    "nodes": lambda o: {"metadata": _slim_meta(o.get("metadata") or {}),
                        "spec": _pick(o.get("spec") or {}, ("unschedulable",)),
                        "status": {"conditions": (o.get("status") or {}).get("conditions") or []}},
    "deployments": lambda o: {"metadata": _slim_meta(o.get("metadata") or {}, annotation=REVISION),
                              "spec": _pick(o.get("spec") or {}, ("replicas", "paused")),
                              "status": o.get("status") or {}},
    "replicasets": lambda o: {"metadata": _slim_meta(o.get("metadata") or {}, annotation=REVISION),
                              "status": o.get("status") or {}},
    "hpas": lambda o: o,
    "jobs": lambda o: {"metadata": _slim_meta(o.get("metadata") or {}),
                       "spec": _pick(o.get("spec") or {}, ("backoffLimit",)), "status": o.get("status") or {}},
}


def list_calls(api: k8s_client.ApiClient) -> dict[str, Callable[..., Any]]:
    """One cluster-wide list call per kind (a single request sequence each, all namespaces)."""
    core, apps = k8s_client.CoreV1Api(api), k8s_client.AppsV1Api(api)
    return {
        "pods": core.list_pod_for_all_namespaces,
        "nodes": core.list_node,
        "deployments": apps.list_deployment_for_all_namespaces,
        "replicasets": apps.list_replica_set_for_all_namespaces,
        "hpas": k8s_client.AutoscalingV2Api(api).list_horizontal_pod_autoscaler_for_all_namespaces,
        "jobs": k8s_client.BatchV1Api(api).list_job_for_all_namespaces,
    }


def fetch_raw_pages(call: Callable[..., Any], *, page_size: int = PAGE_SIZE, timeout: float = 30) -> Any:
    """Yield each page's parsed body; follows ``continue`` tokens to the end."""
    token: str | None = None
    while True:
        extra = {"_continue": token} if token else {}
        response = call(limit=page_size, _preload_content=False, _request_timeout=timeout, **extra)
        try:
            body = orjson.loads(response.data)
        finally:
            response.release_conn()
        yield body
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return


def fetch_snapshot(api: k8s_client.ApiClient, *, page_size: int = PAGE_SIZE, slim: bool = True) -> dict[str, list[dict[str, Any]]]:
    snapshot: dict[str, list[dict[str, Any]]] = {}
    for kind, call in list_calls(api).items():
        slimmer = SLIMMERS[kind] if slim else (lambda o: o)
        items: list[dict[str, Any]] = []
        for body in fetch_raw_pages(call, page_size=page_size):
            items.extend(slimmer(item) for item in body.get("items") or [])
        snapshot[kind] = items
    return snapshot


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


def poll(cluster: Cluster) -> PollOutcome:
    """Poll one cluster once (the caller holds its poll lock)."""
    started = time.monotonic()
    try:
        api = api_client_for(cluster)
    except ClusterConfigError as exc:
        return _failed(cluster, started, str(exc))
    try:
        snapshot = fetch_snapshot(api)
    except Exception as exc:  # noqa: BLE001 -- any failure to list is "unreachable": counted, backed off, reported
        return _failed(cluster, started, _describe(exc))
    finally:
        api.close()
    fetched = time.monotonic()
    findings = detect(**snapshot)
    record_poll_success(cluster)
    result = ingest_findings(cluster, findings)
    seconds = time.monotonic() - started
    for kind, items in snapshot.items():
        metrics.POLL_OBJECTS.labels(cluster.name, kind).set(len(items))
    metrics.POLL_DURATION.labels(cluster.name).observe(seconds)
    metrics.POLLS.labels(cluster.name, "ok").inc()
    log.info("cluster_polled", cluster=cluster.name, seconds=round(seconds, 3), fetch_seconds=round(fetched - started, 3),
             objects={k: len(v) for k, v in snapshot.items()}, findings=len(findings), opened=len(result.opened),
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
