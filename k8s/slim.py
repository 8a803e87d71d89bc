"""Slim objects: each kind cut down to the fields the detectors read.

The poll keeps the ReplicaSets and Jobs it needs for owner resolution in this form; the watcher
keeps every kind in it (as orjson bytes, a fraction of a parsed dict's memory). Two versions of
an object whose slim forms are equal are the same to the detectors, so the watcher skips the
events that change nothing they read (heartbeats, managedFields, resourceVersion bumps).
`tests/k8s/test_watch_state.py` proves the detectors find the same things in slim objects as in
full ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]

REVISION = "deployment.kubernetes.io/revision"
_META_KEYS = ("name", "namespace", "ownerReferences", "creationTimestamp", "deletionTimestamp")
_CONDITION_KEYS = ("type", "status", "reason", "message", "lastTransitionTime")  # not lastHeartbeat/UpdateTime
_CONTAINER_KEYS = ("name", "livenessProbe", "readinessProbe")
_STATUS_KEYS = ("name", "state", "lastState", "restartCount", "ready", "image")


def pick(obj: Obj, keys: tuple[str, ...]) -> Obj:
    return {key: obj[key] for key in keys if key in obj}


def slim_meta(meta: Obj, annotation: str | None = None, labels: bool = False) -> Obj:
    slim = pick(meta, _META_KEYS)
    if "ownerReferences" in slim:
        slim["ownerReferences"] = [pick(ref, ("kind", "name", "controller")) for ref in slim["ownerReferences"] or ()]
    if labels and "labels" in meta:
        slim["labels"] = meta["labels"]
    if annotation and annotation in (meta.get("annotations") or {}):
        slim["annotations"] = {annotation: meta["annotations"][annotation]}
    return slim


def _conditions(status: Obj) -> list[Obj]:
    return [pick(c, _CONDITION_KEYS) for c in status.get("conditions") or ()]


def _with_conditions(status: Obj, keys: tuple[str, ...]) -> Obj:
    slim = pick(status, keys)
    if status.get("conditions"):
        slim["conditions"] = _conditions(status)
    return slim


def _container(container: Obj) -> Obj:
    slim = pick(container, _CONTAINER_KEYS)
    memory = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    if memory is not None:
        slim["resources"] = {"limits": {"memory": memory}}
    return slim


def slim_pod(pod: Obj) -> Obj:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    slim_spec: Obj = pick(spec, ("nodeName",))
    for key in ("initContainers", "containers"):
        if key in spec:
            slim_spec[key] = [_container(c) for c in spec[key] or ()]
    slim_status = _with_conditions(status, ("phase", "reason", "message", "startTime"))
    for key in ("initContainerStatuses", "containerStatuses"):
        if key in status:
            slim_status[key] = [pick(c, _STATUS_KEYS) for c in status[key] or ()]
    return {"metadata": slim_meta(pod.get("metadata") or {}, labels=True), "spec": slim_spec, "status": slim_status}


def slim_node(node: Obj) -> Obj:
    meta = node.get("metadata") or {}
    return {"metadata": pick(meta, ("name", "labels")), "spec": pick(node.get("spec") or {}, ("unschedulable",)),
            "status": _with_conditions(node.get("status") or {}, ())}


def slim_deployment(deployment: Obj) -> Obj:
    return {"metadata": slim_meta(deployment.get("metadata") or {}, labels=True),
            "spec": pick(deployment.get("spec") or {}, ("replicas", "paused")),
            "status": _with_conditions(deployment.get("status") or {}, ("availableReplicas", "readyReplicas", "updatedReplicas"))}


def slim_hpa(hpa: Obj) -> Obj:
    return {"metadata": slim_meta(hpa.get("metadata") or {}, labels=True),
            "spec": pick(hpa.get("spec") or {}, ("maxReplicas", "scaleTargetRef")),
            "status": _with_conditions(hpa.get("status") or {}, ("currentReplicas", "desiredReplicas"))}


def slim_replicaset(rs: Obj) -> Obj:
    return {"metadata": slim_meta(rs.get("metadata") or {}, annotation=REVISION),
            "status": pick(rs.get("status") or {}, ("readyReplicas", "replicas"))}


def slim_job(job: Obj) -> Obj:
    # Jobs keep their labels: rule label selectors match failed_job incidents by them.
    return {"metadata": slim_meta(job.get("metadata") or {}, labels=True),
            "spec": pick(job.get("spec") or {}, ("backoffLimit",)),
            "status": pick(job.get("status") or {}, ("conditions", "failed"))}


SLIMMERS: dict[str, Callable[[Obj], Obj]] = {
    "pods": slim_pod,
    "nodes": slim_node,
    "deployments": slim_deployment,
    "replicasets": slim_replicaset,
    "hpas": slim_hpa,
    "jobs": slim_job,
}
