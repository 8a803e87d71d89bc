"""The MEDIUM and HIGH tools: each sets a value rather than adding to one, so a retry of a call
that already took effect is a no-op that says so."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
from kubernetes.utils.quantity import parse_quantity

from k8s.mcp_server.kube import (
    JSON,
    JSON_PATCH,
    MERGE,
    RESTARTED_AT,
    Kube,
    KubeError,
    ToolFailure,
    _env_number,
    _history,
    _images,
    _owner,
    _revision,
)
from k8s.mcp_server.kube_read import _pods_on


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
