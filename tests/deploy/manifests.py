"""Rendering the kustomize overlays and reading them back strictly, shared by the deploy tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s_client

from tests.conftest import ROOT

K8S_DIR = ROOT / "deploy" / "k8s"
OVERLAYS = ("default", "read-only")
READ_VERBS = frozenset({"get", "list", "watch"})
AGENT_SERVICE_ACCOUNT = ("aiops", "aiops-agent")

# What the cluster poll lists besides the tools (DESIGN.md "Sense": pods, nodes, deployments,
# replicasets, HPAs and jobs, as raw JSON, all namespaces). A poll that starts reading more
# must add it here and to deploy/k8s/base/rbac.yaml.
POLL_READS: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("", "pods", "list"),
        ("", "nodes", "list"),
        ("apps", "deployments", "list"),
        ("apps", "replicasets", "list"),
        ("autoscaling", "horizontalpodautoscalers", "list"),
        ("batch", "jobs", "list"),
    }
)


def kubectl() -> str:
    return shutil.which("kubectl") or "/usr/bin/kubectl"


@cache
def kubectl_problem() -> str | None:
    """Why this machine's kubectl cannot render the overlays, or None. Debian's kubernetes-client
    is 1.20, whose kustomize predates components and `labels`; 1.24+ (kustomize v4.5) is needed."""
    if not Path(kubectl()).exists():
        return "kubectl is not installed (.ci/run installs it)"
    result = subprocess.run([kubectl(), "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30)
    try:
        minor = int(re.match(r"\d+", json.loads(result.stdout)["clientVersion"]["minor"])[0])  # type: ignore[index]
    except (ValueError, KeyError, TypeError):
        return f"cannot read kubectl's version: {result.stdout[:200]} {result.stderr[:200]}"
    return None if minor >= 24 else f"kubectl 1.{minor} is too old for these kustomizations (needs 1.24+)"


@cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize` of an overlay name or a directory, parsed."""
    path = K8S_DIR / "overlays" / target if target in OVERLAYS else Path(target)
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def find(objects: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind}/{name} rendered")


def model_name(obj: dict[str, Any]) -> str:
    version = obj["apiVersion"].split("/")[-1]
    return version[0].upper() + version[1:] + obj["kind"]


_LIST = re.compile(r"^List\[(.+)\]$")
_DICT = re.compile(r"^Dict\[str, (.+)\]$")
_PRIMITIVES = {"str", "int", "bool", "float", "object", "datetime", "date", "bytes"}


def unknown_fields(value: Any, type_name: str, path: str = "") -> list[str]:
    """Keys the client's model does not define, recursively. The client itself ignores them
    (so a misspelt `readinessProbe` or `runAsNonroot` would silently do nothing): this is the
    strict check the API server's field validation would make."""
    if value is None or type_name in _PRIMITIVES:
        return []
    if match := _LIST.match(type_name):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [problem for i, item in enumerate(value) for problem in unknown_fields(item, match[1], f"{path}[{i}]")]
    if match := _DICT.match(type_name):
        return [problem for key, item in value.items() for problem in unknown_fields(item, match[1], f"{path}.{key}")]
    model = getattr(k8s_client, type_name)
    if not isinstance(value, dict):
        return [f"{path}: expected an object ({type_name}), got {type(value).__name__}"]
    json_to_attr = {json_key: attr for attr, json_key in model.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in json_to_attr:
            problems.append(f"{path}.{key}: not a field of {type_name}")
            continue
        problems.extend(unknown_fields(item, model.openapi_types[json_to_attr[key]], f"{path}.{key}"))
    return problems


def load_typed(obj: dict[str, Any]) -> Any:
    """Deserialize through the client (required fields, enums, types), as a response would be."""
    return k8s_client.ApiClient().deserialize(json.dumps(obj), model_name(obj), "application/json")


def permission_triples(rules: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    triples = set()
    for rule in rules:
        assert not rule.get("resourceNames"), "rules are per resource type; resourceNames would not match tools"
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    triples.add((group, resource, verb))
    return triples


def granted_to_agent(objects: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) the agent's service account holds through its bindings."""
    objects = list(objects)
    roles = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "ClusterRole"}
    granted: set[tuple[str, str, str]] = set()
    for binding in (obj for obj in objects if obj["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        subjects = {(s.get("namespace"), s["name"]) for s in binding.get("subjects", []) if s["kind"] == "ServiceAccount"}
        if AGENT_SERVICE_ACCOUNT in subjects:
            assert binding["kind"] == "ClusterRoleBinding", "the agent watches every namespace: ClusterRoleBindings only"
            granted |= permission_triples(roles[binding["roleRef"]["name"]]["rules"])
    return granted


def required_permissions(tool_specs: dict[str, Any], poll_reads: Iterable[tuple[str, str, str]] = POLL_READS) -> dict[
    tuple[str, str, str], set[str]
]:
    """(apiGroup, resource, verb) -> who needs it (tool names, or "poll")."""
    needed: dict[tuple[str, str, str], set[str]] = {}
    for name, spec in tool_specs.items():
        for permission in spec.rbac:
            for verb in permission.verbs:
                needed.setdefault((permission.api_group, permission.resource, verb), set()).add(name)
    for triple in poll_reads:
        needed.setdefault(triple, set()).add("poll")
    return needed


def rbac_mismatch(granted: set[tuple[str, str, str]], needed: dict[tuple[str, str, str], set[str]]) -> list[str]:
    problems = [
        f"missing {verb} {group or 'core'}/{resource} (needed by {', '.join(sorted(needed[(group, resource, verb)]))})"
        for group, resource, verb in sorted(set(needed) - granted)
    ]
    problems += [
        f"excess {verb} {group or 'core'}/{resource} (no tool or poll uses it)"
        for group, resource, verb in sorted(granted - set(needed))
    ]
    return problems


def pod_specs(objects: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"])
        for obj in objects
        if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")
    ]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]
