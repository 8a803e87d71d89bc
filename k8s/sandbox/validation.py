"""What the API server defaults and refuses on a write, for the kinds the sandbox serves."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from k8s.sandbox import objects as o
from k8s.sandbox.errors import ApiError
from k8s.sandbox.resources import Resource
from k8s.sandbox.store import Obj, copy
from k8s.sandbox.workloads import pod_qos

# Kinds without a spec (their data is top-level) and without a status.
NO_SPEC = ("events", "endpoints", "configmaps", "secrets")
NO_STATUS = (*NO_SPEC, "leases")


def defaults(resource: Resource, body: Obj) -> None:
    spec = body.setdefault("spec", {}) if resource.plural not in NO_SPEC else None
    if resource.plural not in NO_STATUS:
        body["status"] = {"phase": "Active"} if resource.plural == "namespaces" else {}
    if resource.plural == "secrets":
        body.setdefault("type", "Opaque")
    if resource.plural == "statefulsets" and spec is not None:
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
    if resource.plural == "namespaces":
        body["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = body["metadata"]["name"]
        body["spec"] = {"finalizers": ["kubernetes"]}
    if resource.plural == "deployments" and spec is not None:
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    if resource.plural == "jobs" and spec is not None:
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("template", {}).setdefault("spec", {}).setdefault("restartPolicy", "Never")
    if resource.plural == "pods" and spec is not None:
        body["status"] = {"phase": "Pending", "qosClass": pod_qos(spec) if spec.get("containers") else "BestEffort"}
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("schedulerName", "default-scheduler")

def normalize(resource: Resource, obj: Obj) -> None:
    """A Secret's `stringData` is write-only: merged into `data` (base64), as the API server does;
    `data` must be base64. Values never appear in an error or a log line, only their keys."""
    if resource.plural != "secrets":
        return
    data = obj.get("data") or {}
    string_data = obj.pop("stringData", None) or {}
    if not isinstance(data, dict) or not isinstance(string_data, dict):
        raise ApiError.bad_request("Secret: data and stringData must be maps of key to value")
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (ValueError, TypeError):
            raise ApiError.bad_request(f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data in data[{key}]') from None
    for key, value in string_data.items():
        if not isinstance(value, str):
            raise ApiError.bad_request(f"Secret: stringData[{key}] must be a string")
        data[key] = base64.b64encode(value.encode()).decode()
    if data:
        obj["data"] = data


def validate(resource: Resource, obj: Obj) -> None:
    name = obj["metadata"].get("name", "")
    causes: list[tuple[str, str, str]] = []
    spec = obj.get("spec") or {}

    def non_negative_int(path: str, value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            causes.append((path, "FieldValueInvalid", f"Invalid value: {orjson.dumps(value).decode()}: must be greater than or equal to 0"))

    def pod_spec(path: str, ps: Any) -> None:
        containers = ps.get("containers") if isinstance(ps, dict) else None
        if not isinstance(containers, list) or not containers:
            causes.append((f"{path}.containers", "FieldValueRequired", "Required value"))
            return
        for i, c in enumerate(containers):
            if not isinstance(c, dict) or not c.get("name"):
                causes.append((f"{path}.containers[{i}].name", "FieldValueRequired", "Required value"))
                continue
            if not c.get("image"):
                causes.append((f"{path}.containers[{i}].image", "FieldValueRequired", "Required value"))
            for kind in ("requests", "limits"):
                for res, qty in ((c.get("resources") or {}).get(kind) or {}).items():
                    try:
                        o.parse_cpu(qty) if res == "cpu" else o.parse_bytes(qty)
                    except (ValueError, TypeError):
                        causes.append((f"{path}.containers[{i}].resources.{kind}[{res}]", "FieldValueInvalid",
                                       f"Invalid value: {orjson.dumps(qty).decode()}: quantities must match the regular expression "
                                       "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"))

    if resource.plural in ("deployments", "replicasets", "statefulsets"):
        non_negative_int("spec.replicas", spec.get("replicas", 1))
        template = spec.get("template") or {}
        selector = spec.get("selector") or {}
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            causes.append(("spec.selector", "FieldValueRequired", "Required value"))
        labels = (template.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items() if k != "pod-template-hash"):
            causes.append(("spec.template.metadata.labels", "FieldValueInvalid",
                           f"Invalid value: {orjson.dumps(labels).decode()}: `selector` does not match template `labels`"))
        pod_spec("spec.template.spec", template.get("spec"))
    elif resource.plural in ("jobs", "daemonsets"):
        pod_spec("spec.template.spec", (spec.get("template") or {}).get("spec"))
    elif resource.plural == "pods":
        pod_spec("spec", spec)
    elif resource.plural == "horizontalpodautoscalers":
        max_r, min_r = spec.get("maxReplicas"), spec.get("minReplicas", 1)
        if not isinstance(max_r, int) or isinstance(max_r, bool) or max_r < 1:
            causes.append(("spec.maxReplicas", "FieldValueInvalid", f"Invalid value: {orjson.dumps(max_r).decode()}: must be greater than or equal to 1"))
        elif not isinstance(min_r, int) or min_r < 1 or min_r > max_r:
            causes.append(("spec.minReplicas", "FieldValueInvalid", f"Invalid value: {orjson.dumps(min_r).decode()}: must be less than or equal to maxReplicas"))
        if not (spec.get("scaleTargetRef") or {}).get("name"):
            causes.append(("spec.scaleTargetRef.name", "FieldValueRequired", "Required value"))
    elif resource.plural == "nodes":
        if "unschedulable" in spec and not isinstance(spec["unschedulable"], bool):
            causes.append(("spec.unschedulable", "FieldValueTypeInvalid", "Invalid value: must be a boolean"))
    if causes:
        raise ApiError.invalid(resource, name, causes)

def check_pod_update(resource: Resource, current: Obj, new: Obj) -> None:
    old_spec, new_spec = copy(current["spec"]), copy(new.get("spec") or {})
    for spec in (old_spec, new_spec):
        for c in spec.get("containers") or ():
            c.pop("image", None)
        spec.pop("activeDeadlineSeconds", None)
        spec.pop("tolerations", None)
    if old_spec != new_spec:
        raise ApiError.invalid(resource, current["metadata"]["name"], [(
            "spec", "FieldValueForbidden",
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
            "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
            "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)")])
