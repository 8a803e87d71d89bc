"""The LOW (read-only) tools and the summaries they return, on `kube.Kube`."""

from __future__ import annotations

from k8s.mcp_server.kube import (
    JSON,
    Kube,
    KubeError,
    ToolFailure,
    _age,
    _event,
    _images,
    _newest_first,
    _owner,
    _revision,
)


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
