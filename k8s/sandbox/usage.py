"""`metrics.k8s.io/v1beta1`: node and pod usage as metrics-server reports it, from the simulation.

Computed on each request, never stored: a running container uses a steady share of its request
(a per-pod share, so `kubectl top` sorts meaningfully); a container under an `oom_killed` fault
climbs from 60% to 100% of its memory limit over its short life and is reported at its limit
while it waits out the back-off after the kill. A node's usage is its pods' plus the system's.
As with metrics-server, a node that is not Ready (its kubelet cannot be scraped) and the pods on
it have no metrics, and pods with no started container are left out.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from k8s.sandbox import objects as o
from k8s.sandbox.errors import ApiError
from k8s.sandbox.kubelet import is_active
from k8s.sandbox.resources import METRICS
from k8s.sandbox.store import Obj, matches, now_iso, parse_label_selector
from k8s.sandbox.wire import Request, Response, json_response

if TYPE_CHECKING:
    from k8s.sandbox.simulation import Simulation

GROUP, VERSION = "metrics.k8s.io", "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
NODE_METRICS, POD_METRICS = METRICS
SYSTEM_CPU_M, SYSTEM_MEMORY = 180, 900 * 1024 * 1024  # kubelet, runtime and the OS on every node
OOM_RAMP_S = 12.0  # how long an OOM-killed instance lives in the simulation (see kubelet.py)


def serve(sim: Simulation, r: Request, rest: list[str]) -> Response:
    """GET .../nodes[/name], .../pods, .../namespaces/{ns}/pods[/name]."""
    if r.method != "GET":
        raise ApiError.method_not_allowed()
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or rest[0] not in ("nodes", "pods") or len(rest) > 2 or (rest[0] == "nodes" and namespace is not None):
        raise ApiError.no_route()
    resource = NODE_METRICS if rest[0] == "nodes" else POD_METRICS
    name = rest[1] if len(rest) == 2 else None
    if resource is POD_METRICS and name is not None and namespace is None:
        raise ApiError.no_route()
    labels = parse_label_selector(r.query.get("labelSelector", ""))
    with sim.lock:
        items = _node_metrics(sim) if resource is NODE_METRICS else _pod_metrics(sim, namespace)
    if name is not None:
        found = next((m for m in items if m["metadata"]["name"] == name), None)
        if found is None:
            raise ApiError.not_found(resource, name)
        return json_response(200, found)
    items = [m for m in items if matches(m, labels, [])]
    return json_response(200, {"kind": f"{resource.kind}List", "apiVersion": API_VERSION, "metadata": {}, "items": items})


def _share(key: str, low: float, high: float) -> float:
    return low + (high - low) * (zlib.crc32(key.encode()) % 1000) / 1000


def _since(ts: str | None, now: datetime) -> float:
    if not ts:
        return 0.0
    return (now - datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)).total_seconds()


def container_usage(sim: Simulation, pod: Obj, container: Obj, status: Obj, now: datetime) -> tuple[int, int] | None:
    """(millicores, bytes) a container uses now, or None if it has never started."""
    from k8s.sandbox.faults import pod_faults

    state = status.get("state") or {}
    last = (status.get("lastState") or {}).get("terminated")
    if "running" not in state and not last:
        return None
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    key = pod["metadata"]["uid"] + container["name"]
    cpu_request = o.parse_cpu(requests.get("cpu") or limits.get("cpu") or "50m")
    memory_request = o.parse_bytes(requests.get("memory") or limits.get("memory") or "64Mi")
    cpu = max(1, round(cpu_request * _share(key + "cpu", 0.15, 0.7)))
    memory = round(memory_request * _share(key + "mem", 0.45, 0.9))
    limit = o.parse_bytes(limits.get("memory")) if limits.get("memory") else 0
    oom = any(f.type == "oom_killed" and f.opts.get("container") == container["name"] for f in pod_faults(sim, pod))
    if oom and limit:
        if "running" in state:
            climbed = min(1.0, 0.6 + 0.4 * _since(state["running"].get("startedAt"), now) / OOM_RAMP_S)
            memory = round(limit * climbed)
        else:  # killed at its limit, waiting out the back-off
            memory = limit
        cpu = max(cpu, round(cpu_request * 0.9))
    elif limit:
        memory = min(memory, round(limit * 0.95))
    return cpu, memory


def _pod_metrics(sim: Simulation, namespace: str | None) -> list[Obj]:
    now = datetime.now(UTC)
    stamp = now_iso()
    unready = _unready_nodes(sim)
    out = []
    for pod in sim.store.all("pods", namespace):
        node = pod["spec"].get("nodeName")
        if not node or node in unready or not is_active(pod):
            continue
        statuses = {s["name"]: s for s in (pod.get("status") or {}).get("containerStatuses") or ()}
        containers: list[dict[str, Any]] = []
        for c in pod["spec"]["containers"]:
            used = container_usage(sim, pod, c, statuses.get(c["name"]) or {}, now)
            if used is not None:
                containers.append({"name": c["name"], "usage": {"cpu": f"{used[0] * 1_000_000}n", "memory": f"{used[1] // 1024}Ki"}})
        if containers:
            meta = pod["metadata"]
            out.append({"kind": "PodMetrics", "apiVersion": API_VERSION,
                        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "creationTimestamp": stamp,
                                     "labels": dict(meta.get("labels") or {})},
                        "timestamp": stamp, "window": "15s", "containers": containers})
    return out


def _node_metrics(sim: Simulation) -> list[Obj]:
    unready = _unready_nodes(sim)
    totals: dict[str, list[int]] = {}
    for metrics in _pod_metrics(sim, None):
        pod = sim.store.get("pods", metrics["metadata"]["namespace"], metrics["metadata"]["name"])
        total = totals.setdefault(pod["spec"]["nodeName"] if pod else "", [0, 0])
        for c in metrics["containers"]:
            total[0] += int(c["usage"]["cpu"][:-1]) // 1_000_000
            total[1] += int(c["usage"]["memory"][:-2]) * 1024
    stamp = now_iso()
    out = []
    for node in sim.store.all("nodes"):
        name = node["metadata"]["name"]
        if name in unready:
            continue
        cpu, memory = totals.get(name, [0, 0])
        out.append({"kind": "NodeMetrics", "apiVersion": API_VERSION,
                    "metadata": {"name": name, "creationTimestamp": stamp, "labels": dict(node["metadata"].get("labels") or {})},
                    "timestamp": stamp, "window": "20s",
                    "usage": {"cpu": f"{(cpu + SYSTEM_CPU_M) * 1_000_000}n", "memory": f"{(memory + SYSTEM_MEMORY) // 1024}Ki"}})
    return out


def _unready_nodes(sim: Simulation) -> set[str]:
    return {n["metadata"]["name"] for n in sim.store.all("nodes") if not sim.node_ready(n)}
