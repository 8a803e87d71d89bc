"""Detectors: pure functions from the raw API JSON of a cluster to a list of `Finding`s.

Input is what the API server returns (``kubectl get ... -o json`` items, or a list
response's ``items`` parsed with orjson): dicts with camelCase keys, never the
kubernetes client's models. Nothing here does I/O, so the same code runs in the poll,
in ``manage.py detect`` on an offline dump, and in unit tests.

A finding names the resource it was seen on (``kind``/``namespace``/``name``; ``pod`` for
pod findings) and the workload that owns it (``owner_kind``/``owner_name``): pods are
renamed on every restart, so incidents are keyed by the owner (`Finding.workload_key`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from k8s.detectors.findings import (
    CRITICAL,
    FINDING_TYPES,
    INFO,
    PRIMARY_ORDER,
    SEVERITIES,
    WARNING,
    Finding,
    primary_type,
)
from k8s.detectors.owners import POD_ONLY_LABELS, OwnerIndex
from k8s.detectors.pods import (
    HIGH_RESTART_MIN,
    HIGH_RESTART_MIN_AGE_S,
    HIGH_RESTART_PER_HOUR,
    IMAGE_PULL_REASONS,
    START_FAILURE_REASONS,
    detect_pod,
)
from k8s.detectors.raw import parse_time
from k8s.detectors.workloads import (
    BAD_ROLLOUT_WINDOW_S,
    DEPLOYMENT_GRACE_S,
    ROLLOUT_SLACK_S,
    detect_deployment,
    detect_hpa,
    detect_job,
    detect_node,
    replicasets_by_deployment,
)

__all__ = [
    "BAD_ROLLOUT_WINDOW_S", "CRITICAL", "DEPLOYMENT_GRACE_S", "FINDING_TYPES", "HIGH_RESTART_MIN",
    "HIGH_RESTART_MIN_AGE_S", "HIGH_RESTART_PER_HOUR", "IMAGE_PULL_REASONS", "INFO", "POD_ONLY_LABELS",
    "PRIMARY_ORDER", "ROLLOUT_SLACK_S", "SEVERITIES", "START_FAILURE_REASONS", "WARNING", "Finding",
    "OwnerIndex", "detect", "detect_deployments", "detect_hpas", "detect_jobs", "detect_nodes",
    "detect_pods", "parse_time", "primary_type", "replicasets_by_deployment", "split_list",
]


# Per-kind entry points, so a caller can stream pages through them (the poll holds only the
# ReplicaSets and Jobs that owner resolution needs, never all pods at once).
def detect_pods(pods: Iterable[Mapping[str, Any]], owners: OwnerIndex, *, now: datetime | None = None) -> list[Finding]:
    now = now or datetime.now(UTC)
    return [finding for pod in pods for finding in detect_pod(pod, owners, now)]


def detect_nodes(nodes: Iterable[Mapping[str, Any]]) -> list[Finding]:
    return [finding for node in nodes for finding in detect_node(node)]


def detect_deployments(deployments: Iterable[Mapping[str, Any]],
                       rs_by_deployment: Mapping[tuple[str, str], list[Mapping[str, Any]]], *,
                       now: datetime | None = None) -> list[Finding]:
    now = now or datetime.now(UTC)
    return [finding for deployment in deployments for finding in detect_deployment(deployment, rs_by_deployment, now)]


def detect_hpas(hpas: Iterable[Mapping[str, Any]], owners: OwnerIndex | None = None) -> list[Finding]:
    """`owners` (when it holds the target workloads) labels a finding with its target's labels."""
    return [finding for hpa in hpas for finding in detect_hpa(hpa, owners)]


def detect_jobs(jobs: Iterable[Mapping[str, Any]], owners: OwnerIndex) -> list[Finding]:
    return [finding for job in jobs for finding in detect_job(job, owners)]


def detect(
    pods: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    deployments: Iterable[Mapping[str, Any]],
    replicasets: Iterable[Mapping[str, Any]],
    hpas: Iterable[Mapping[str, Any]],
    jobs: Iterable[Mapping[str, Any]],
    *,
    now: datetime | None = None,
) -> list[Finding]:
    """Every problem visible in these objects; healthy objects yield nothing."""
    now = now or datetime.now(UTC)
    replicasets = list(replicasets)
    jobs = list(jobs)
    deployments = list(deployments)
    owners = OwnerIndex(replicasets, jobs)
    for deployment in deployments:
        owners.add_workload(deployment, "Deployment")
    return [
        *detect_nodes(nodes),
        *detect_pods(pods, owners, now=now),
        *detect_deployments(deployments, replicasets_by_deployment(replicasets), now=now),
        *detect_hpas(hpas, owners),
        *detect_jobs(jobs, owners),
    ]


def split_list(items: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Sort the items of a mixed ``kubectl get pods,nodes,... -o json`` List by kind."""
    buckets: dict[str, list[Mapping[str, Any]]] = {
        "pods": [], "nodes": [], "deployments": [], "replicasets": [], "hpas": [], "jobs": []
    }
    keys = {"Pod": "pods", "Node": "nodes", "Deployment": "deployments", "ReplicaSet": "replicasets",
            "HorizontalPodAutoscaler": "hpas", "Job": "jobs"}
    for item in items:
        key = keys.get(item.get("kind") or "")
        if key:
            buckets[key].append(item)
    return buckets
