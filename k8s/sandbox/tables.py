"""Server-side printing: the `Table` (meta.k8s.io/v1) kubectl asks for on `get`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from k8s.sandbox.resources import Resource
from k8s.sandbox.store import Obj


def human_age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    seconds = int((datetime.now(UTC) - datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)).total_seconds())
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def pod_status_reason(pod: Obj) -> str:
    """The STATUS column, computed the way kubectl's pod printer does."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for cs in reversed(status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated", {}).get("reason"):
            reason = state["terminated"]["reason"]
        elif "terminated" in state:
            code = state["terminated"].get("exitCode", 0)
            reason = f"ExitCode:{code}"
    if status.get("reason") in ("Evicted",):
        reason = status["reason"]
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_row(pod: Obj) -> list[Any]:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(cs.get("restartCount", 0) for cs in statuses)
    restart_text = str(restarts)
    finished = [((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt") for cs in statuses]
    finished = [f for f in finished if f]
    if restarts and finished:
        restart_text = f"{restarts} ({human_age(max(finished))} ago)"
    return [
        pod["metadata"]["name"], f"{ready}/{len(pod['spec']['containers'])}", pod_status_reason(pod), restart_text,
        human_age(pod["metadata"].get("creationTimestamp")), status.get("podIP") or "<none>",
        pod["spec"].get("nodeName") or "<none>", "<none>", "<none>",
    ]


def _node_row(node: Obj) -> list[Any]:
    ready = next((c for c in node["status"].get("conditions") or () if c["type"] == "Ready"), None)
    state = "Ready" if ready and ready["status"] == "True" else "NotReady" if ready else "Unknown"
    if node["spec"].get("unschedulable"):
        state += ",SchedulingDisabled"
    info = node["status"].get("nodeInfo") or {}
    internal = next((a["address"] for a in node["status"].get("addresses") or () if a["type"] == "InternalIP"), "<none>")
    return [node["metadata"]["name"], state, "<none>", human_age(node["metadata"].get("creationTimestamp")),
            info.get("kubeletVersion", ""), internal, "<none>", info.get("osImage", ""), info.get("kernelVersion", ""),
            info.get("containerRuntimeVersion", "")]


def _deployment_row(d: Obj) -> list[Any]:
    s = d.get("status") or {}
    containers = d["spec"]["template"]["spec"]["containers"]
    selector = ",".join(f"{k}={v}" for k, v in (d["spec"]["selector"].get("matchLabels") or {}).items())
    return [d["metadata"]["name"], f"{s.get('readyReplicas', 0)}/{d['spec'].get('replicas', 1)}", s.get("updatedReplicas", 0),
            s.get("availableReplicas", 0), human_age(d["metadata"].get("creationTimestamp")),
            ",".join(c["name"] for c in containers), ",".join(c["image"] for c in containers), selector]


def _replicaset_row(rs: Obj) -> list[Any]:
    s = rs.get("status") or {}
    return [rs["metadata"]["name"], rs["spec"].get("replicas", 0), s.get("replicas", 0), s.get("readyReplicas", 0),
            human_age(rs["metadata"].get("creationTimestamp"))]


def _hpa_row(h: Obj) -> list[Any]:
    s = h.get("status") or {}
    ref = h["spec"]["scaleTargetRef"]
    current = next((m["resource"]["current"].get("averageUtilization") for m in s.get("currentMetrics") or () if m.get("resource")), None)
    target = next((m["resource"]["target"].get("averageUtilization") for m in h["spec"].get("metrics") or () if m.get("resource")), None)
    targets = f"cpu: {current if current is not None else '<unknown>'}%/{target}%"
    return [h["metadata"]["name"], f"{ref['kind']}/{ref['name']}", targets, h["spec"].get("minReplicas", 1),
            h["spec"]["maxReplicas"], s.get("currentReplicas", 0), human_age(h["metadata"].get("creationTimestamp"))]


def _job_row(j: Obj) -> list[Any]:
    s = j.get("status") or {}
    conds = {c["type"]: c["status"] for c in s.get("conditions") or ()}
    state = "Complete" if conds.get("Complete") == "True" else "Failed" if conds.get("Failed") == "True" else "Running"
    return [j["metadata"]["name"], state, f"{s.get('succeeded', 0)}/{j['spec'].get('completions', 1)}",
            "41s" if s.get("completionTime") else human_age(s.get("startTime")), human_age(j["metadata"].get("creationTimestamp"))]


def _event_row(e: Obj) -> list[Any]:
    inv = e.get("involvedObject") or {}
    return [human_age(e.get("lastTimestamp")), e.get("type", ""), e.get("reason", ""),
            f"{inv.get('kind', '').lower()}/{inv.get('name', '')}", e.get("message", "")]


def _service_row(s: Obj) -> list[Any]:
    ports = ",".join(f"{p['port']}/{p.get('protocol', 'TCP')}" for p in s["spec"].get("ports") or ())
    return [s["metadata"]["name"], s["spec"].get("type", "ClusterIP"), s["spec"].get("clusterIP", "None"), "<none>",
            ports, human_age(s["metadata"].get("creationTimestamp"))]


def _statefulset_row(sts: Obj) -> list[Any]:
    s = sts.get("status") or {}
    containers = sts["spec"]["template"]["spec"]["containers"]
    return [sts["metadata"]["name"], f"{s.get('readyReplicas', 0)}/{sts['spec'].get('replicas', 1)}",
            human_age(sts["metadata"].get("creationTimestamp")), ",".join(c["name"] for c in containers),
            ",".join(c["image"] for c in containers)]


def _configmap_row(cm: Obj) -> list[Any]:
    return [cm["metadata"]["name"], len(cm.get("data") or {}) + len(cm.get("binaryData") or {}),
            human_age(cm["metadata"].get("creationTimestamp"))]


def _secret_row(secret: Obj) -> list[Any]:
    return [secret["metadata"]["name"], secret.get("type", "Opaque"), len(secret.get("data") or {}),
            human_age(secret["metadata"].get("creationTimestamp"))]


def _col(name: str, ctype: str = "string", priority: int = 0, fmt: str = "") -> dict[str, Any]:
    return {"name": name, "type": ctype, "format": fmt, "description": "", "priority": priority}


COLUMNS: dict[str, tuple[list[dict[str, Any]], Any]] = {
    "pods": ([_col("Name", fmt="name"), _col("Ready"), _col("Status"), _col("Restarts"), _col("Age"),
              _col("IP", priority=1), _col("Node", priority=1), _col("Nominated Node", priority=1),
              _col("Readiness Gates", priority=1)], _pod_row),
    "nodes": ([_col("Name", fmt="name"), _col("Status"), _col("Roles"), _col("Age"), _col("Version"),
               _col("Internal-IP", priority=1), _col("External-IP", priority=1), _col("OS-Image", priority=1),
               _col("Kernel-Version", priority=1), _col("Container-Runtime", priority=1)], _node_row),
    "deployments": ([_col("Name", fmt="name"), _col("Ready"), _col("Up-to-date", "integer"), _col("Available", "integer"),
                     _col("Age"), _col("Containers", priority=1), _col("Images", priority=1), _col("Selector", priority=1)],
                    _deployment_row),
    "replicasets": ([_col("Name", fmt="name"), _col("Desired", "integer"), _col("Current", "integer"),
                     _col("Ready", "integer"), _col("Age")], _replicaset_row),
    "horizontalpodautoscalers": ([_col("Name", fmt="name"), _col("Reference"), _col("Targets"), _col("MinPods", "integer"),
                                  _col("MaxPods", "integer"), _col("Replicas", "integer"), _col("Age")], _hpa_row),
    "statefulsets": ([_col("Name", fmt="name"), _col("Ready"), _col("Age"), _col("Containers", priority=1),
                      _col("Images", priority=1)], _statefulset_row),
    "configmaps": ([_col("Name", fmt="name"), _col("Data", "integer"), _col("Age")], _configmap_row),
    "secrets": ([_col("Name", fmt="name"), _col("Type"), _col("Data", "integer"), _col("Age")], _secret_row),
    "jobs": ([_col("Name", fmt="name"), _col("Status"), _col("Completions"), _col("Duration"), _col("Age")], _job_row),
    "events": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")], _event_row),
    "services": ([_col("Name", fmt="name"), _col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"),
                  _col("Age")], _service_row),
}


def table(resource: Resource, items: list[Obj], rv: str, cont: str, remaining: int | None) -> dict[str, Any]:
    columns, row = COLUMNS.get(resource.plural, ([_col("Name", fmt="name"), _col("Age")],
                                                  lambda x: [x["metadata"]["name"], human_age(x["metadata"].get("creationTimestamp"))]))
    meta: dict[str, Any] = {"resourceVersion": rv}
    if cont:
        meta["continue"] = cont
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": [{"cells": row(item), "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                                  "metadata": item["metadata"]}} for item in items],
    }
