"""Verify: re-read the cluster and say whether an incident's workload is healthy now.

The same detectors the watch loop runs, on fresh lists fetched as raw JSON (no model
deserialisation), narrowed to the incident's namespace where it has one. A node incident is
judged by its workloads: `mitigated` when they run healthy away from the node while the node
itself is still not Ready (the cause needs a person), `resolved` when the node is Ready again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from kubernetes import client as k8s_client

from k8s.client import api_client_for
from k8s.detectors import OwnerIndex, detect

PAGE = 500
TIMEOUT = 30


@dataclass
class Verdict:
    state: str  # "healthy" | "mitigated" | "failing"
    detail: str
    findings: list[dict[str, Any]] = field(default_factory=list)


def _pages(fetch: Any, **kwargs: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = None
    while True:
        extra = {"_continue": token} if token else {}
        response = fetch(limit=PAGE, _preload_content=False, _request_timeout=TIMEOUT, **kwargs, **extra)
        body = orjson.loads(response.data)
        items.extend(body.get("items") or [])
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return items


# One API client per cluster configuration and worker process: building one parses the
# kubeconfig and a TLS context, and a kept client reuses its connections (a verify step makes
# six list calls, and re-checks every few seconds).
_CLIENTS: dict[tuple[Any, ...], k8s_client.ApiClient] = {}


def _client(cluster: Any) -> k8s_client.ApiClient:
    key = (cluster.pk, cluster.kubeconfig_path, cluster.context, cluster.in_cluster, cluster.updated_at)
    api = _CLIENTS.get(key)
    if api is None:
        for old in [k for k in _CLIENTS if k[0] == cluster.pk]:
            _CLIENTS.pop(old).close()
        api = _CLIENTS[key] = api_client_for(cluster)
    return api


def fetch_objects(cluster: Any, namespace: str = "") -> dict[str, list[dict[str, Any]]]:
    api = _client(cluster)
    try:
        core, apps = k8s_client.CoreV1Api(api), k8s_client.AppsV1Api(api)
        autoscaling, batch = k8s_client.AutoscalingV2Api(api), k8s_client.BatchV1Api(api)
        if namespace:
            return {
                "pods": _pages(core.list_namespaced_pod, namespace=namespace),
                "nodes": _pages(core.list_node),
                "deployments": _pages(apps.list_namespaced_deployment, namespace=namespace),
                "replicasets": _pages(apps.list_namespaced_replica_set, namespace=namespace),
                "hpas": _pages(autoscaling.list_namespaced_horizontal_pod_autoscaler, namespace=namespace),
                "jobs": _pages(batch.list_namespaced_job, namespace=namespace),
            }
        return {
            "pods": _pages(core.list_pod_for_all_namespaces),
            "nodes": _pages(core.list_node),
            "deployments": _pages(apps.list_deployment_for_all_namespaces),
            "replicasets": _pages(apps.list_replica_set_for_all_namespaces),
            "hpas": _pages(autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces),
            "jobs": _pages(batch.list_job_for_all_namespaces),
        }
    except Exception:
        # A broken connection or rotated credentials: build a fresh client next time.
        for key in [k for k, v in _CLIENTS.items() if v is api]:
            _CLIENTS.pop(key).close()
        raise


def _is_daemon_or_mirror(pod: dict[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
        return True
    return any(ref.get("kind") == "DaemonSet" for ref in meta.get("ownerReferences") or [])


def workloads_on_node(objects: dict[str, list[dict[str, Any]]], node: str) -> list[str]:
    """Workload keys (Kind/namespace/name) of the evictable pods bound to a node."""
    owners = OwnerIndex(objects["replicasets"], objects["jobs"])
    keys = set()
    for pod in objects["pods"]:
        if (pod.get("spec") or {}).get("nodeName") != node or _is_daemon_or_mirror(pod):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        kind, name = owners.owner_of_pod(pod)
        keys.add(f"{kind}/{(pod.get('metadata') or {}).get('namespace') or ''}/{name}")
    return sorted(keys)


def _node_ready(objects: dict[str, list[dict[str, Any]]], node: str) -> bool | None:
    for item in objects["nodes"]:
        if (item.get("metadata") or {}).get("name") == node:
            for condition in (item.get("status") or {}).get("conditions") or []:
                if condition.get("type") == "Ready":
                    return condition.get("status") == "True"
            return False
    return None


def verify_workload(
    cluster: Any, kind: str, namespace: str, name: str, node_workloads: list[str] | None = None,
    own_incidents: dict[str, str] | None = None,
) -> Verdict:
    """`own_incidents` (node incidents): workload key -> a note on the open incident it has of
    its own; such a workload must have left the node, but its health is that incident's business."""
    if kind == "Node":
        return _verify_node(cluster, name, node_workloads or [], own_incidents or {})
    objects = fetch_objects(cluster, namespace)
    key = f"{kind}/{namespace}/{name}"
    findings = [f for f in detect(**objects) if f.workload_key() == key]
    if not findings:
        return Verdict("healthy", f"{key}: no findings")
    return Verdict(
        "failing",
        f"{key}: " + "; ".join(sorted({f.message for f in findings})),
        [f.as_dict() for f in findings],
    )


def _verify_node(cluster: Any, node: str, node_workloads: list[str], own_incidents: dict[str, str]) -> Verdict:
    objects = fetch_objects(cluster)
    ready = _node_ready(objects, node)
    findings = detect(**objects)
    if ready:
        return Verdict("healthy", f"node {node} is Ready")
    still_there = set(workloads_on_node(objects, node)) & set(node_workloads)
    judged = set(node_workloads) - set(own_incidents)
    failing = [f for f in findings if f.workload_key() in judged]
    if still_there or failing:
        parts = []
        if still_there:
            parts.append(f"still on {node}: {', '.join(sorted(still_there))}")
        if failing:
            parts.append("; ".join(sorted({f.message for f in failing})))
        return Verdict("failing", f"node {node} not Ready; " + "; ".join(parts), [f.as_dict() for f in failing])
    moved = ", ".join(sorted(judged)) or "no workloads were on it"
    state = "missing" if ready is None else "not Ready"
    detail = f"node {node} {state}; its workloads run healthy elsewhere ({moved})"
    if own_incidents:
        detail += "; moved off but failing on their own: " + ", ".join(
            f"{key} ({note})" for key, note in sorted(own_incidents.items()))
    return Verdict("mitigated", detail)
