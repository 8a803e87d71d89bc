"""What each tool does to a cluster, through the `kubernetes` client's ApiClient (never a shell).

Requests go through the client's own transport (its auth, TLS and proxy handling) as raw
REST calls that return JSON: no model deserialisation, which is slow and strict about fields,
and patch bodies that say exactly which patch type they are. Every mutating tool sets a
value rather than adding to one, so a retry of a call that already took effect is a no-op
that says so.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from kubernetes.client import ApiClient
from kubernetes.utils.quantity import parse_quantity

JSON = dict[str, Any]
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
WORKLOAD_PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


class ToolFailure(Exception):
    """A tool error for the caller to read (an MCP result with is_error)."""


class KubeError(ToolFailure):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# The bounds of the mutating tools, with the same names and limits as the Django settings
# (the server also runs without Django). `python -m k8s.mcp_server` checks them at start.
BOUNDS = {
    "AIOPS_MAX_SCALE_REPLICAS": (20.0, 1.0, None),
    "AIOPS_MAX_HPA_REPLICAS": (50.0, 1.0, None),
    "AIOPS_MEMORY_LIMIT_MAX_FACTOR": (2.0, 1.0, 8.0),
}


def _env_number(name: str, default: float | None = None) -> float:
    default_value, minimum, maximum = BOUNDS.get(name, (default, None, None))
    raw = os.environ.get(name, "").strip()
    if not raw:
        return float(default_value or 0)
    try:
        value = float(raw)
    except ValueError:
        raise ToolFailure(f"{name}={raw!r} is not a number") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ToolFailure(f"{name}={raw!r} is outside [{minimum:g}, {maximum if maximum is not None else 'inf'}]")
    return value


class Kube:
    def __init__(self, api: ApiClient, *, timeout: float = 20.0) -> None:
        self.api = api
        self.timeout = timeout

    # --- transport ---------------------------------------------------------------------
    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None,
                content_type: str = "application/json", raw: bool = False) -> Any:
        headers = {"Accept": "*/*" if raw else "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (query or {}).items()
                  if v is not None]
        serialized = self.api.param_serialize(method=method, resource_path=path, query_params=params,
                                              header_params=headers, body=body, auth_settings=["BearerToken"])
        response = self.api.call_api(*serialized, _request_timeout=self.timeout)
        data = response.read()
        if response.status >= 400:
            message = response.reason or "error"
            try:
                status = orjson.loads(data)
                message = status.get("message") or message
            except orjson.JSONDecodeError:
                if data:
                    message = data.decode(errors="replace")[:500]
            raise KubeError(response.status, message)
        if raw:
            return data
        return orjson.loads(data) if data else {}

    def get(self, path: str, **query: Any) -> JSON:
        return self.request("GET", path, query=query)

    def get_or_none(self, path: str) -> JSON | None:
        try:
            return self.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, *, limit: int = 5000, **query: Any) -> list[JSON]:
        items: list[JSON] = []
        token = None
        while True:
            page = self.get(path, limit=min(500, limit), **{"continue": token}, **query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token or len(items) >= limit:
                return items[:limit]

    def patch(self, path: str, body: Any, content_type: str = STRATEGIC) -> JSON:
        return self.request("PATCH", path, body=body, content_type=content_type)

    # --- lookups -------------------------------------------------------------------------
    def require_namespace(self, namespace: str) -> None:
        if self.get_or_none(f"/api/v1/namespaces/{namespace}") is None:
            raise ToolFailure(f"namespace {namespace!r} does not exist")

    def pod(self, namespace: str, name: str) -> JSON:
        self.require_namespace(namespace)
        pod = self.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}")
        if pod is None:
            raise ToolFailure(f"pod {namespace}/{name} not found")
        return pod

    def deployment(self, namespace: str, name: str) -> JSON:
        self.require_namespace(namespace)
        found = self.get_or_none(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        if found is None:
            raise ToolFailure(f"deployment {namespace}/{name} not found")
        return found

    def workload(self, namespace: str, kind: str, name: str) -> tuple[str, JSON]:
        """(its API path, the object) of a Deployment, StatefulSet or DaemonSet."""
        plural = WORKLOAD_PLURALS.get(kind)
        if plural is None:
            raise ToolFailure(f"kind {kind!r} is not one of {', '.join(WORKLOAD_PLURALS)}")
        self.require_namespace(namespace)
        path = f"/apis/apps/v1/namespaces/{namespace}/{plural}/{name}"
        found = self.get_or_none(path)
        if found is None:
            raise ToolFailure(f"{kind} {namespace}/{name} not found")
        return path, found

    def node(self, name: str) -> JSON:
        found = self.get_or_none(f"/api/v1/nodes/{name}")
        if found is None:
            raise ToolFailure(f"node {name!r} not found")
        return found

    def events_about(self, namespace: str, name: str, limit: int = 20) -> list[JSON]:
        events = self.list(f"/api/v1/namespaces/{namespace}/events", fieldSelector=f"involvedObject.name={name}")
        return [_event(e) for e in _newest_first(e for e in events if (e.get("involvedObject") or {}).get("name") == name)][:limit]

    def replicasets_of(self, deployment: JSON) -> list[JSON]:
        meta = deployment["metadata"]
        labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or None
        sets = self.list(f"/apis/apps/v1/namespaces/{meta['namespace']}/replicasets", labelSelector=selector)
        uid = meta.get("uid")
        owned = [rs for rs in sets if any(o.get("uid") == uid or (not uid and o.get("name") == meta["name"])
                                           for o in (rs["metadata"].get("ownerReferences") or [])
                                           if o.get("kind") == "Deployment")]
        return sorted(owned, key=_revision)


def _revision(obj: JSON) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _history(obj: JSON) -> list[str]:
    return [x for x in (obj["metadata"].get("annotations") or {}).get(REVISION_HISTORY, "").split(",") if x]


def _ts(obj: JSON) -> str:
    return (obj.get("lastTimestamp") or obj.get("eventTime") or (obj.get("metadata") or {}).get("creationTimestamp")
            or "")


def _newest_first(events: Any) -> list[JSON]:
    return sorted(events, key=_ts, reverse=True)


def _event(e: JSON) -> JSON:
    obj = e.get("involvedObject") or {}
    return {
        "time": _ts(e), "type": e.get("type"), "reason": e.get("reason"), "message": e.get("message"),
        "object": f"{obj.get('kind', '')}/{obj.get('name', '')}", "namespace": (e.get("metadata") or {}).get("namespace"),
        "count": e.get("count"),
    }


def _images(template: JSON) -> list[str]:
    return [c.get("image", "") for c in ((template.get("spec") or {}).get("containers") or [])]


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return ""
    try:
        seconds = int((datetime.now(UTC) - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds())
    except ValueError:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _owner(obj: JSON) -> JSON | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


# --- summaries -----------------------------------------------------------------------------
def pod_summary(pod: JSON) -> JSON:
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    total = len(spec.get("containers") or []) or len(statuses)
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    reason = status.get("reason") or ""
    for c in [*(status.get("initContainerStatuses") or []), *statuses]:
        state = c.get("state") or {}
        waiting, terminated = state.get("waiting"), state.get("terminated")
        if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            reason = waiting["reason"]
            break
        if terminated and terminated.get("reason") not in (None, "Completed"):
            reason = terminated["reason"]
            break
    last = next(((c.get("lastState") or {}).get("terminated") for c in statuses
                 if (c.get("lastState") or {}).get("terminated")), None)
    phase = status.get("phase") or "Unknown"
    if meta.get("deletionTimestamp"):
        reason = reason or "Terminating"
    problem = (
        phase in ("Pending", "Failed", "Unknown")
        or bool(reason and phase != "Succeeded")
        or (phase == "Running" and ready < total)
    )
    owner = _owner(pod)
    return {
        "namespace": meta.get("namespace"), "name": meta["name"], "phase": phase, "ready": f"{ready}/{total}",
        "restarts": restarts, "reason": reason, "node": spec.get("nodeName", ""), "age": _age(meta.get("creationTimestamp")),
        "owner": f"{owner['kind']}/{owner['name']}" if owner else "",
        "last_termination": ({"reason": last.get("reason"), "exit_code": last.get("exitCode"),
                              "finished_at": last.get("finishedAt")} if last else None),
        "problem": problem,
    }


def node_summary(node: JSON) -> JSON:
    status = node.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = conditions.get("Ready", {}).get("status") == "True"
    labels = node["metadata"].get("labels") or {}
    return {
        "name": node["metadata"]["name"], "ready": ready,
        "unschedulable": bool((node.get("spec") or {}).get("unschedulable")),
        "roles": sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")),
        "pressure": sorted(t for t, c in conditions.items() if t != "Ready" and c.get("status") == "True"),
        "kubelet": (status.get("nodeInfo") or {}).get("kubeletVersion", ""),
        "age": _age(node["metadata"].get("creationTimestamp")),
    }


def deployment_summary(d: JSON) -> JSON:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    return {
        "namespace": d["metadata"].get("namespace"), "name": d["metadata"]["name"],
        "replicas": spec.get("replicas", 1), "updated": status.get("updatedReplicas", 0),
        "ready": status.get("readyReplicas", 0), "available": status.get("availableReplicas", 0),
        "images": _images(spec.get("template") or {}), "revision": _revision(d),
        "paused": bool(spec.get("paused")),
    }


def hpa_summary(h: JSON) -> JSON:
    spec, status = h.get("spec") or {}, h.get("status") or {}
    current, maximum = status.get("currentReplicas", 0), spec.get("maxReplicas")
    return {
        "namespace": h["metadata"].get("namespace"), "name": h["metadata"]["name"],
        "target": f"{(spec.get('scaleTargetRef') or {}).get('kind')}/{(spec.get('scaleTargetRef') or {}).get('name')}",
        "min_replicas": spec.get("minReplicas", 1), "max_replicas": maximum, "current_replicas": current,
        "desired_replicas": status.get("desiredReplicas", 0), "maxed": maximum is not None and current >= maximum,
        "metrics": status.get("currentMetrics") or [],
    }


# --- LOW -------------------------------------------------------------------------------------
def list_pods(k: Kube, namespace: str | None = None, label_selector: str | None = None, problems_only: bool = False,
              limit: int = 500) -> JSON:
    if namespace:
        k.require_namespace(namespace)
    path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
    pods = [pod_summary(p) for p in k.list(path, limit=limit, labelSelector=label_selector or None)]
    if problems_only:
        pods = [p for p in pods if p["problem"]]
    return {"count": len(pods), "pods": pods}


def describe_pod(k: Kube, namespace: str, name: str) -> JSON:
    pod = k.pod(namespace, name)
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    containers = []
    states = {c["name"]: c for c in status.get("containerStatuses") or []}
    for c in spec.get("containers") or []:
        st = states.get(c["name"], {})
        containers.append({
            "name": c["name"], "image": c.get("image"), "resources": c.get("resources") or {},
            "ready": st.get("ready"), "restarts": st.get("restartCount", 0), "state": st.get("state") or {},
            "last_state": st.get("lastState") or {},
            "probes": {p: bool(c.get(p)) for p in ("livenessProbe", "readinessProbe", "startupProbe")},
        })
    return {
        "summary": pod_summary(pod), "labels": pod["metadata"].get("labels") or {},
        "conditions": [{"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason"),
                        "message": c.get("message")} for c in status.get("conditions") or []],
        "containers": containers, "node": spec.get("nodeName"), "qos": status.get("qosClass"),
        "events": k.events_about(namespace, name),
    }


def _container(pod: JSON, container: str | None) -> str:
    names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    if container is None:
        if not names:
            raise ToolFailure("the pod has no containers")
        return names[0]
    if container not in names:
        raise ToolFailure(f"container {container!r} is not in pod {pod['metadata']['name']} (containers: {', '.join(names)})")
    return container


def get_pod_logs(k: Kube, namespace: str, name: str, container: str | None = None, tail: int = 200,
                 previous: bool = False) -> str:
    pod = k.pod(namespace, name)
    container = _container(pod, container)
    try:
        data = k.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}/log",
                         query={"container": container, "tailLines": tail, "previous": previous or None}, raw=True)
    except KubeError as exc:
        raise ToolFailure(f"logs of {namespace}/{name} ({container}{', previous' if previous else ''}): {exc}") from None
    return data.decode("utf-8", errors="replace")


def analyze_pod_logs(k: Kube, namespace: str, name: str, container: str | None = None, tail: int = 2000,
                     previous: bool = False) -> JSON:
    from k8s.log_patterns import analyze_logs, explain_exit_code

    text = get_pod_logs(k, namespace, name, container, tail, previous)
    analysis = analyze_logs(text).as_dict()
    summary = pod_summary(k.pod(namespace, name))
    last = summary["last_termination"]
    exit_code = last.get("exit_code") if last else None
    analysis["last_exit_code"] = exit_code
    analysis["exit_code_explanation"] = explain_exit_code(int(exit_code)) if exit_code is not None else None
    analysis["pod"] = f"{namespace}/{name}"
    return analysis


def list_nodes(k: Kube) -> JSON:
    nodes = [node_summary(n) for n in k.list("/api/v1/nodes")]
    return {"count": len(nodes), "nodes": nodes}


def _pods_on(k: Kube, node: str) -> list[JSON]:
    pods = k.list("/api/v1/pods", fieldSelector=f"spec.nodeName={node}")
    return [p for p in pods if (p.get("spec") or {}).get("nodeName") == node]


def describe_node(k: Kube, name: str) -> JSON:
    node = k.node(name)
    status = node.get("status") or {}
    return {
        "summary": node_summary(node),
        "conditions": [{"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason"),
                        "message": c.get("message")} for c in status.get("conditions") or []],
        "capacity": status.get("capacity") or {}, "allocatable": status.get("allocatable") or {},
        "taints": (node.get("spec") or {}).get("taints") or [],
        "pods": [{k_: p[k_] for k_ in ("namespace", "name", "phase", "ready", "reason")}
                 for p in map(pod_summary, _pods_on(k, name))],
    }


def list_deployments(k: Kube, namespace: str | None = None) -> JSON:
    if namespace:
        k.require_namespace(namespace)
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments" if namespace else "/apis/apps/v1/deployments"
    items = [deployment_summary(d) for d in k.list(path)]
    return {"count": len(items), "deployments": items}


def describe_deployment(k: Kube, namespace: str, name: str) -> JSON:
    d = k.deployment(namespace, name)
    spec, status = d.get("spec") or {}, d.get("status") or {}
    template = spec.get("template") or {}
    return {
        "summary": deployment_summary(d), "strategy": spec.get("strategy") or {},
        "selector": spec.get("selector") or {},
        "containers": [{"name": c["name"], "image": c.get("image"), "resources": c.get("resources") or {}}
                       for c in (template.get("spec") or {}).get("containers") or []],
        "conditions": [{"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason"),
                        "message": c.get("message")} for c in status.get("conditions") or []],
        "replicasets": [{"name": rs["metadata"]["name"], "revision": _revision(rs),
                         "replicas": (rs.get("spec") or {}).get("replicas", 0),
                         "ready": (rs.get("status") or {}).get("readyReplicas", 0)} for rs in k.replicasets_of(d)],
        "events": k.events_about(namespace, name, 10),
    }


def rollout_history(k: Kube, namespace: str, name: str) -> JSON:
    d = k.deployment(namespace, name)
    current = _revision(d)
    revisions = [{
        "revision": _revision(rs), "replicaset": rs["metadata"]["name"],
        "images": _images((rs.get("spec") or {}).get("template") or {}),
        "created": rs["metadata"].get("creationTimestamp"),
        "change_cause": (rs["metadata"].get("annotations") or {}).get("kubernetes.io/change-cause", ""),
        "current": _revision(rs) == current,
    } for rs in k.replicasets_of(d)]
    return {"deployment": f"{namespace}/{name}", "current_revision": current, "revisions": revisions}


def rollout_status(k: Kube, namespace: str, name: str) -> JSON:
    d = k.deployment(namespace, name)
    spec, status = d.get("spec") or {}, d.get("status") or {}
    want = spec.get("replicas", 1)
    updated, available = status.get("updatedReplicas", 0), status.get("availableReplicas", 0)
    total = status.get("replicas", 0)
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing") or {}
    if d["metadata"].get("generation", 0) > status.get("observedGeneration", 0):
        state, message = "pending", "waiting for the deployment spec update to be observed"
    elif progressing.get("reason") == "ProgressDeadlineExceeded":
        state, message = "stuck", f"exceeded its progress deadline: {progressing.get('message', '')}"
    elif updated < want:
        state, message = "progressing", f"{updated} of {want} new replicas updated"
    elif total > updated:
        state, message = "progressing", f"{total - updated} old replicas pending termination"
    elif available < updated:
        state, message = "progressing", f"{available} of {updated} updated replicas available"
    else:
        state, message = "complete", f"successfully rolled out ({available}/{want} available)"
    return {"deployment": f"{namespace}/{name}", "state": state, "message": message, "revision": _revision(d)}


def list_events(k: Kube, namespace: str | None = None, object_name: str | None = None, warnings_only: bool = False,
                limit: int = 100) -> JSON:
    if namespace:
        k.require_namespace(namespace)
    path = f"/api/v1/namespaces/{namespace}/events" if namespace else "/api/v1/events"
    query = {"fieldSelector": f"involvedObject.name={object_name}"} if object_name else {}
    events = k.list(path, **query)
    if object_name:
        events = [e for e in events if (e.get("involvedObject") or {}).get("name") == object_name]
    if warnings_only:
        events = [e for e in events if e.get("type") == "Warning"]
    items = [_event(e) for e in _newest_first(events)][:limit]
    return {"count": len(items), "events": items}


def list_namespaces(k: Kube) -> JSON:
    items = [{"name": n["metadata"]["name"], "phase": (n.get("status") or {}).get("phase", ""),
              "age": _age(n["metadata"].get("creationTimestamp"))} for n in k.list("/api/v1/namespaces")]
    return {"count": len(items), "namespaces": items}


def list_services(k: Kube, namespace: str | None = None) -> JSON:
    if namespace:
        k.require_namespace(namespace)
    path = f"/api/v1/namespaces/{namespace}/services" if namespace else "/api/v1/services"
    items = []
    for s in k.list(path):
        spec = s.get("spec") or {}
        items.append({"namespace": s["metadata"].get("namespace"), "name": s["metadata"]["name"],
                      "type": spec.get("type", "ClusterIP"), "cluster_ip": spec.get("clusterIP", ""),
                      "ports": [f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []],
                      "selector": spec.get("selector") or {}})
    return {"count": len(items), "services": items}


def get_hpa(k: Kube, namespace: str, name: str | None = None) -> JSON:
    k.require_namespace(namespace)
    base = f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"
    if name:
        found = k.get_or_none(f"{base}/{name}")
        if found is None:
            raise ToolFailure(f"HPA {namespace}/{name} not found")
        return hpa_summary(found)
    items = [hpa_summary(h) for h in k.list(base)]
    return {"count": len(items), "hpas": items}


# --- MEDIUM ----------------------------------------------------------------------------------
def restart_pod(k: Kube, namespace: str, name: str) -> str:
    k.require_namespace(namespace)
    pod = k.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}")
    if pod is None:
        return f"pod {namespace}/{name} is already gone; nothing to do"
    owner = _owner(pod)
    if owner is None:
        raise ToolFailure(f"pod {namespace}/{name} has no controller, so deleting it would not bring it back "
                          "(delete_pod_force deletes it anyway)")
    if pod["metadata"].get("deletionTimestamp"):
        return f"pod {namespace}/{name} is already terminating; {owner['kind']} {owner['name']} replaces it"
    try:
        k.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
                  body={"preconditions": {"uid": pod["metadata"].get("uid")}} if pod["metadata"].get("uid") else None)
    except KubeError as exc:
        if exc.status in (404, 409):  # gone meanwhile, or a new pod took the name: not ours to delete
            return f"pod {namespace}/{name} was already replaced; nothing to do"
        raise
    return f"deleted pod {namespace}/{name}; {owner['kind']} {owner['name']} will replace it"


def restart_deployment(k: Kube, namespace: str, name: str, restarted_at: str | None = None) -> str:
    d = k.deployment(namespace, name)
    stamp = restarted_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    annotations = ((d["spec"].get("template") or {}).get("metadata") or {}).get("annotations") or {}
    if annotations.get(RESTARTED_AT) == stamp:
        return f"deployment {namespace}/{name} was already restarted at {stamp}; nothing to do"
    k.patch(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
            {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}})
    return f"restarted deployment {namespace}/{name} (restartedAt={stamp})"


def restart_workload(k: Kube, namespace: str, kind: str, name: str, restarted_at: str | None = None) -> str:
    """`kubectl rollout restart` of a Deployment, StatefulSet or DaemonSet: every pod is replaced
    by its controller's own rollout (honouring maxUnavailable / partitions / PDB-free order)."""
    path, obj = k.workload(namespace, kind, name)
    stamp = restarted_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    annotations = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
    if annotations.get(RESTARTED_AT) == stamp:
        return f"{kind} {namespace}/{name} was already restarted at {stamp}; nothing to do"
    k.patch(path, {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}})
    return f"restarted {kind} {namespace}/{name} (restartedAt={stamp}); its controller replaces every pod"


def scale_deployment(k: Kube, namespace: str, name: str, replicas: int) -> str:
    ceiling = int(_env_number("AIOPS_MAX_SCALE_REPLICAS"))
    if replicas > ceiling:
        raise ToolFailure(f"replicas={replicas} is above the configured maximum of {ceiling} (AIOPS_MAX_SCALE_REPLICAS)")
    d = k.deployment(namespace, name)
    before = (d.get("spec") or {}).get("replicas", 1)
    if before == replicas:
        return f"deployment {namespace}/{name} already has {replicas} replicas; nothing to do"
    k.patch(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale", {"spec": {"replicas": replicas}}, MERGE)
    return f"scaled deployment {namespace}/{name} from {before} to {replicas} replicas"


def set_hpa_max_replicas(k: Kube, namespace: str, name: str, max_replicas: int) -> str:
    ceiling = int(_env_number("AIOPS_MAX_HPA_REPLICAS"))
    if max_replicas > ceiling:
        raise ToolFailure(f"max_replicas={max_replicas} is above the configured maximum of {ceiling} "
                          "(AIOPS_MAX_HPA_REPLICAS)")
    k.require_namespace(namespace)
    path = f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}"
    hpa = k.get_or_none(path)
    if hpa is None:
        raise ToolFailure(f"HPA {namespace}/{name} not found")
    spec = hpa.get("spec") or {}
    if max_replicas < spec.get("minReplicas", 1):
        raise ToolFailure(f"max_replicas={max_replicas} is below the HPA's minReplicas={spec.get('minReplicas', 1)}")
    if spec.get("maxReplicas") == max_replicas:
        return f"HPA {namespace}/{name} already has maxReplicas={max_replicas}; nothing to do"
    k.patch(path, {"spec": {"maxReplicas": max_replicas}}, MERGE)
    return f"set HPA {namespace}/{name} maxReplicas from {spec.get('maxReplicas')} to {max_replicas}"


def _set_unschedulable(k: Kube, name: str, value: bool) -> str:
    node = k.node(name)
    if bool((node.get("spec") or {}).get("unschedulable")) == value:
        return f"node {name} is already {'cordoned' if value else 'schedulable'}; nothing to do"
    k.patch(f"/api/v1/nodes/{name}", {"spec": {"unschedulable": value}})
    return f"{'cordoned' if value else 'uncordoned'} node {name}"


def cordon_node(k: Kube, name: str) -> str:
    return _set_unschedulable(k, name, True)


def uncordon_node(k: Kube, name: str) -> str:
    return _set_unschedulable(k, name, False)


# --- HIGH ------------------------------------------------------------------------------------
def drain_node(k: Kube, name: str, grace_period_seconds: int | None = None) -> JSON:
    cordon = _set_unschedulable(k, name, True)
    evicted, skipped, blocked, gone = [], [], [], []
    for pod in _pods_on(k, name):
        meta = pod["metadata"]
        ref = f"{meta.get('namespace')}/{meta['name']}"
        owner = _owner(pod)
        if owner and owner.get("kind") == "DaemonSet":
            skipped.append(f"{ref} (DaemonSet)")
            continue
        if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
            skipped.append(f"{ref} (mirror pod)")
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") or meta.get("deletionTimestamp"):
            skipped.append(f"{ref} (finished or terminating)")
            continue
        body: JSON = {"apiVersion": "policy/v1", "kind": "Eviction",
                      "metadata": {"name": meta["name"], "namespace": meta.get("namespace")}}
        if grace_period_seconds is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": grace_period_seconds}
        try:
            k.request("POST", f"/api/v1/namespaces/{meta.get('namespace')}/pods/{meta['name']}/eviction", body=body)
            evicted.append(ref)
        except KubeError as exc:
            if exc.status == 404:
                gone.append(ref)
            elif exc.status == 429:  # a PodDisruptionBudget forbids it now
                blocked.append(f"{ref}: {exc}")
            else:
                raise
    result = {"node": name, "cordon": cordon, "evicted": evicted, "already_gone": gone, "skipped": skipped,
              "blocked": blocked}
    if blocked:
        raise ToolFailure(f"drain of {name} incomplete: {len(blocked)} pod(s) blocked by a PodDisruptionBudget; "
                          f"the node stays cordoned; run again later. {orjson.dumps(result).decode()}")
    return result


def _clean_template(template: JSON) -> JSON:
    clean = orjson.loads(orjson.dumps(template))
    labels = (clean.get("metadata") or {}).get("labels") or {}
    labels.pop("pod-template-hash", None)
    return clean


def rollback_deployment(k: Kube, namespace: str, name: str, revision: int | None = None) -> str:
    d = k.deployment(namespace, name)
    current = _revision(d)
    sets = k.replicasets_of(d)
    if revision is None:
        older = [rs for rs in sets if _revision(rs) < current] if current else sets[:-1]
        if not older:
            raise ToolFailure(f"deployment {namespace}/{name} has no previous revision to roll back to")
        target = older[-1]
    else:
        # Rolling back renumbers the target ReplicaSet (it becomes the newest revision) and
        # Kubernetes keeps its old numbers in revision-history: match those too, so a retry of
        # the same rollback finds its target and does nothing.
        matches = [rs for rs in sets if _revision(rs) == revision or str(revision) in _history(rs)]
        if not matches:
            known = ", ".join(str(_revision(rs)) for rs in sets) or "none"
            raise ToolFailure(f"deployment {namespace}/{name} has no revision {revision} (revisions: {known})")
        target = matches[0]
    template = _clean_template((target.get("spec") or {}).get("template") or {})
    if _clean_template(d["spec"].get("template") or {}) == template:
        return (f"deployment {namespace}/{name} already runs the template of revision {_revision(target)}; "
                "nothing to do")
    k.patch(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
            [{"op": "replace", "path": "/spec/template", "value": template}], JSON_PATCH)
    return (f"rolled deployment {namespace}/{name} back to revision {_revision(target)} "
            f"({', '.join(_images(template))})")


def _deployment_of_pod(k: Kube, namespace: str, pod_name: str) -> str:
    pod = k.pod(namespace, pod_name)
    owner = _owner(pod)
    if owner and owner.get("kind") == "ReplicaSet":
        rs = k.get_or_none(f"/apis/apps/v1/namespaces/{namespace}/replicasets/{owner['name']}")
        rs_owner = _owner(rs) if rs else None
        if rs_owner and rs_owner.get("kind") == "Deployment":
            return rs_owner["name"]
    raise ToolFailure(f"pod {namespace}/{pod_name} is not owned by a deployment")


def patch_memory_limit(k: Kube, namespace: str, memory: str, name: str | None = None, pod: str | None = None,
                       container: str | None = None, kind: str = "Deployment") -> str:
    if bool(name) == bool(pod):
        raise ToolFailure("give exactly one of name (the workload) or pod")
    if pod and kind != "Deployment":
        raise ToolFailure("pod finds a Deployment; give the name of the StatefulSet or DaemonSet instead")
    deployment_name = name or _deployment_of_pod(k, namespace, pod or "")
    path, d = k.workload(namespace, kind, deployment_name)
    containers = ((d["spec"].get("template") or {}).get("spec") or {}).get("containers") or []
    names = [c["name"] for c in containers]
    target = container or (names[0] if names else None)
    if target not in names:
        raise ToolFailure(f"container {target!r} is not in {kind} {namespace}/{deployment_name} "
                          f"(containers: {', '.join(names)})")
    index = names.index(target)
    resources = orjson.loads(orjson.dumps(containers[index].get("resources") or {}))
    limits, requests = resources.setdefault("limits", {}), resources.get("requests") or {}
    try:
        wanted = parse_quantity(memory)
    except ValueError:
        raise ToolFailure(f"memory {memory!r} is not a Kubernetes quantity (e.g. 512Mi)") from None
    base_text = limits.get("memory") or requests.get("memory")
    if not base_text:
        raise ToolFailure(f"container {target} has no memory limit or request to bound the change against")
    base = parse_quantity(base_text)
    factor = _env_number("AIOPS_MEMORY_LIMIT_MAX_FACTOR")
    if wanted <= 0 or wanted > base * Decimal(str(factor)):
        raise ToolFailure(f"memory {memory} is outside the allowed range (0, {factor:g} x {base_text}] "
                          "(AIOPS_MEMORY_LIMIT_MAX_FACTOR)")
    if requests.get("memory") and wanted < parse_quantity(requests["memory"]):
        raise ToolFailure(f"memory {memory} is below the container's request of {requests['memory']}")
    if limits.get("memory") and parse_quantity(limits["memory"]) == wanted:
        return f"container {target} of {namespace}/{deployment_name} already has a {memory} memory limit; nothing to do"
    before = limits.get("memory", "none")
    limits["memory"] = memory
    k.patch(path, [
        # The test guards the index: if the containers changed meanwhile, the patch fails instead
        # of changing another container.
        {"op": "test", "path": f"/spec/template/spec/containers/{index}/name", "value": target},
        {"op": "add", "path": f"/spec/template/spec/containers/{index}/resources", "value": resources},
    ], JSON_PATCH)
    return f"set memory limit of {target} in {kind} {namespace}/{deployment_name} from {before} to {memory}"


def delete_pod_force(k: Kube, namespace: str, name: str) -> str:
    k.require_namespace(namespace)
    if k.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}") is None:
        return f"pod {namespace}/{name} is already gone; nothing to do"
    try:
        k.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
                  query={"gracePeriodSeconds": 0}, body={"gracePeriodSeconds": 0})
    except KubeError as exc:
        if exc.status == 404:
            return f"pod {namespace}/{name} is already gone; nothing to do"
        raise
    return f"force-deleted pod {namespace}/{name}"


OPERATIONS = {
    "list_pods": list_pods, "describe_pod": describe_pod, "get_pod_logs": get_pod_logs,
    "analyze_pod_logs": analyze_pod_logs, "list_nodes": list_nodes, "describe_node": describe_node,
    "list_deployments": list_deployments, "describe_deployment": describe_deployment,
    "rollout_history": rollout_history, "rollout_status": rollout_status, "list_events": list_events,
    "list_namespaces": list_namespaces, "list_services": list_services, "get_hpa": get_hpa,
    "restart_pod": restart_pod, "restart_deployment": restart_deployment, "restart_workload": restart_workload,
    "scale_deployment": scale_deployment,
    "set_hpa_max_replicas": set_hpa_max_replicas, "cordon_node": cordon_node, "uncordon_node": uncordon_node,
    "drain_node": drain_node, "rollback_deployment": rollback_deployment, "patch_memory_limit": patch_memory_limit,
    "delete_pod_force": delete_pod_force,
}
