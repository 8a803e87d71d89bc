"""Rules about where pods run: scheduling, evictions, events and node conditions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agents.rca.bundle import metadata_of, normalized_events
from agents.rca.rules import MISSING_REF, QUOTA, RBAC, Case

_INSUFFICIENT = re.compile(r"(?i)insufficient (cpu|memory|ephemeral-storage|pods|[\w./-]+)|too many pods")
_NODE_TAINT = re.compile(r"(?i)node\.kubernetes\.io/(not-ready|unreachable|memory-pressure|disk-pressure|pid-pressure)")
# The kubelet's eviction messages: the pod went over its own limit (its own doing), or the node ran
# low and the kubelet reclaimed it, ranking pods by use above their requests (the node's problem).
_OWN_LIMIT = re.compile(r"(?i)usage exceeds the total limit|exceeded its local ephemeral storage limit|exceeds its limit|emptyDir usage exceeds")
_NODE_LOW = re.compile(r"(?i)the node (was|had been) low on resource|the node had condition")
_MUST_SPECIFY = re.compile(r"(?i)failed quota:.{0,120}must specify")


def scheduling_hypothesis(case: Case, message: str, evidence: dict[str, Any]) -> None:
    if _INSUFFICIENT.search(message):
        case.add("resource_exhaustion", 0.9, f"No node has room for the pod: {message}", evidence)
    elif _NODE_TAINT.search(message):
        case.add("node_failure", 0.75, f"The pod cannot be placed because nodes are unhealthy: {message}", evidence)
    elif re.search(r"(?i)affinity|selector|persistentvolumeclaim", message):
        case.add("config_error", 0.7, f"The pod's placement rules or volume claims match no node: {message}", evidence)
    elif message:
        case.add("resource_exhaustion", 0.5, f"The pod cannot be scheduled: {message}", evidence)


def eviction_hypothesis(case: Case, message: str, evidence: dict[str, Any], confidence: float) -> None:
    if _OWN_LIMIT.search(message):
        case.add("resource_exhaustion", confidence, f"The pod was evicted for using more than its own limit: {message.strip()}", evidence)
    elif _NODE_LOW.search(message):
        case.add("node_failure", confidence, "The node ran low and the kubelet evicted the pod (node-pressure eviction; pods using more "
                 f"than they request go first): {message.strip()}", evidence)
    else:
        case.add("resource_exhaustion", confidence - 0.2, f"The pod was evicted: {message.strip() or 'no reason given'}", evidence)


def _current(bundle: Mapping[str, Any]) -> dict[str, bool]:
    """What the objects say now, to tell a live event from history."""
    pod = bundle.get("pod") or {}
    status = pod.get("status") or {}
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    containers = status.get("containerStatuses") or []
    node = bundle.get("node") or {}
    conditions = {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}
    return {
        "pod": bool(pod),
        "scheduled": bool((pod.get("spec") or {}).get("nodeName")),
        "all_ready": bool(containers) and all(c.get("ready") and (c.get("state") or {}).get("running") for c in containers),
        "images_pulled": bool(statuses) and all(c.get("imageID") for c in statuses),
        "node_healthy": bool(node) and conditions.get("Ready") == "True"
                        and not any(v == "True" for k, v in conditions.items() if k and k.endswith("Pressure")),
    }


def event_hypotheses(case: Case, bundle: Mapping[str, Any]) -> None:
    now = _current(bundle)
    for index, event in enumerate(normalized_events(bundle)):
        reason, message = event["reason"], event["message"]
        on_pod = event["object"].startswith("Pod/")
        evidence = {"source": "event", "detail": f"{reason}: {message}"[:300], "count": event["count"], "index": index}
        # Events are history; where the objects show the problem is over, an event is no cause.
        if reason == "FailedScheduling":
            if not now["scheduled"]:
                scheduling_hypothesis(case, message, evidence)
        elif reason == "Unhealthy" and re.search(r"(?i)(liveness|readiness|startup) probe failed", message):
            if not (on_pod and now["all_ready"]):
                case.add("probe_failure", 0.75, f"Health checks fail while the process runs: {message}", evidence)
        elif reason in ("FailedMount", "FailedAttachVolume") and MISSING_REF.search(message):
            case.add("config_error", 0.85, f"A volume cannot be mounted: {message}", evidence)
        elif MISSING_REF.search(message):
            case.add("config_error", 0.85, f"A referenced ConfigMap, Secret or key is missing: {message}", evidence)
        elif reason == "FailedCreate" and _MUST_SPECIFY.search(message):
            case.add("config_error", 0.85, f"Pods cannot be created: the namespace quota requires resource requests/limits the pod template does not set ({message})", evidence)
        elif reason == "FailedCreate" and QUOTA.search(message):
            case.add("resource_exhaustion", 0.9, f"Pods cannot be created: the namespace quota is used up ({message})", evidence)
        elif reason == "FailedCreate" and RBAC.search(message):
            case.add("permission_error", 0.8, f"Pods cannot be created: {message}", evidence)
        elif reason in ("Failed", "BackOff") and re.search(r"(?i)pull|image", message):
            # The waiting state says it now (0.95); an event alone is weaker, and none once pulled.
            if not now["images_pulled"]:
                case.add("image_pull_error", 0.6, f"The image cannot be pulled: {message}", evidence)
        elif reason in ("Evicted", "Evicting"):
            eviction_hypothesis(case, message, evidence, 0.7)
        elif reason in ("NodeNotReady", "NodeHasDiskPressure", "NodeHasMemoryPressure", "NodeHasInsufficientMemory"):
            if not now["node_healthy"]:
                case.add("node_failure", 0.8, f"The node is failing: {message or reason}", evidence)


def node_hypotheses(case: Case, bundle: Mapping[str, Any]) -> None:
    node = bundle.get("node")
    if not node:
        return
    name = metadata_of(node).get("name")
    pod_node = ((bundle.get("pod") or {}).get("spec") or {}).get("nodeName")
    if pod_node and pod_node != name:
        return  # context only: not the node the pod runs on
    # About the node itself, its state is the answer; as the host of a pod whose own container
    # shows why it fails (an exit code, a log line), it is context that ranks below that.
    weight = 0.0 if not bundle.get("pod") else 0.3
    for condition in (node.get("status") or {}).get("conditions") or []:
        ctype, cstatus = condition.get("type"), condition.get("status")
        detail = f"{ctype}={cstatus}: {condition.get('reason') or ''} {condition.get('message') or ''}".strip()
        if ctype == "Ready" and cstatus != "True":
            case.add("node_failure", 0.9 - weight, f"Node {name} is NotReady ({condition.get('message') or condition.get('reason') or 'no heartbeat'})",
                     {"source": "node", "field": "status.conditions[Ready]", "detail": detail[:300]})
        elif ctype and ctype.endswith("Pressure") and cstatus == "True":
            case.add("node_failure", 0.8 - weight, f"Node {name} is under {ctype}", {"source": "node", "field": f"status.conditions[{ctype}]", "detail": detail[:300]})


