"""The Kubernetes MCP server's tool metadata, importable without starting the server.

`TOOL_SPECS` is the single source of each tool's risk class, the Kubernetes permissions it
uses (`rbac`: the deploy room builds the worker's ClusterRole from it, and a test compares
them), its MCP hints and its JSON input schema. The server lists exactly these schemas, and
the agents app registers its tools from here without starting the server.

Name arguments carry the DNS-1123 patterns in their schema, so a client validating against
the schema refuses `--all` or `a;b` before sending; the server checks them again (with a
clearer message) before any API call, since not every client validates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from k8s.names import DNS1123_LABEL, DNS1123_SUBDOMAIN, LABEL_MAX, SUBDOMAIN_MAX

# Label selectors: keys, values and the operators of the selector grammar, nothing else.
LABEL_SELECTOR = r"^[A-Za-z0-9_./=!, ()-]*$"
DURATION = r"^[0-9]+[smhd]$"


@dataclass(frozen=True)
class Permission:
    api_group: str  # "" = core
    resource: str  # "pods", "pods/log", "deployments"
    verbs: tuple[str, ...]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    risk: str  # "LOW" | "MEDIUM" | "HIGH"
    description: str
    input_schema: dict[str, Any]
    rbac: tuple[Permission, ...]
    # Arguments that name Kubernetes objects, checked as DNS-1123 before any API call.
    name_args: dict[str, str] = field(default_factory=dict)  # arg -> "label" | "subdomain"

    @property
    def read_only(self) -> bool:
        return self.risk == "LOW"

    @property
    def destructive(self) -> bool:
        return self.risk == "HIGH"

    @property
    def verbs(self) -> list[str]:
        return sorted({verb for permission in self.rbac for verb in permission.verbs})

    @property
    def resources(self) -> list[str]:
        return sorted({f"{p.resource}.{p.api_group}" if p.api_group else p.resource for p in self.rbac})

    def meta(self) -> dict[str, Any]:
        """What the server publishes in each tool's `_meta`."""
        return {
            "aiops/risk": self.risk,
            "aiops/verbs": self.verbs,
            "aiops/resources": self.resources,
        }


def _label(description: str) -> dict[str, Any]:
    return {"type": "string", "pattern": DNS1123_LABEL, "minLength": 1, "maxLength": LABEL_MAX, "description": description}


def _subdomain(description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "pattern": DNS1123_SUBDOMAIN,
        "minLength": 1,
        "maxLength": SUBDOMAIN_MAX,
        "description": description,
    }


CLUSTER = _label("A registered cluster's name (or kubeconfig context outside Django); the default cluster if omitted.")
NAMESPACE = _label("Namespace.")


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {**properties, "cluster": CLUSTER},
        "required": required,
        "additionalProperties": False,
    }


def _spec(name: str, risk: str, description: str, properties: dict[str, Any], required: list[str],
          rbac: list[tuple[str, str, tuple[str, ...]]]) -> ToolSpec:
    name_args = {"cluster": "label"}
    for arg, schema in properties.items():
        if schema.get("pattern") == DNS1123_LABEL:
            name_args[arg] = "label"
        elif schema.get("pattern") == DNS1123_SUBDOMAIN:
            name_args[arg] = "subdomain"
    return ToolSpec(
        name=name,
        risk=risk,
        description=description,
        input_schema=_schema(properties, required),
        rbac=tuple(Permission(group, resource, verbs) for group, resource, verbs in rbac),
        name_args=name_args,
    )


POD = _subdomain("Pod name.")
DEPLOYMENT = _subdomain("Deployment name.")
NODE = _subdomain("Node name.")
CONTAINER = _label("Container name; the pod's only (or first) container if omitted.")
WORKLOAD_KIND = {"type": "string", "enum": ["Deployment", "StatefulSet", "DaemonSet"],
                 "description": "The workload's kind."}
RESTARTED_AT_ARG = {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$", "maxLength": 40,
                    "description": "UTC timestamp to set; now if omitted."}
_R, _L, _W = ("get",), ("get", "list"), ("get", "list", "watch")
_NS = ("", "namespaces", ("get",))

_SPECS = [
    # --- LOW: reads --------------------------------------------------------------------
    _spec("list_pods", "LOW", "List pods with phase, readiness, restarts and the reason they are unhealthy.",
          {"namespace": _label("Namespace; all namespaces if omitted."),
           "label_selector": {"type": "string", "pattern": LABEL_SELECTOR, "maxLength": 500,
                              "description": "Label selector, e.g. app=web."},
           "problems_only": {"type": "boolean", "default": False, "description": "Only pods that are not healthy."},
           "limit": {"type": "integer", "minimum": 1, "maximum": 2000, "default": 500}},
          [], [_NS, ("", "pods", ("list",))]),
    _spec("describe_pod", "LOW", "A pod's spec summary, container states, conditions, owner and recent events.",
          {"namespace": NAMESPACE, "name": POD}, ["namespace", "name"],
          [_NS, ("", "pods", _R), ("", "events", ("list",))]),
    _spec("get_pod_logs", "LOW", "The last lines of a pod container's log (or of its previous run).",
          {"namespace": NAMESPACE, "name": POD, "container": CONTAINER,
           "tail": {"type": "integer", "minimum": 1, "maximum": 5000, "default": 200},
           "previous": {"type": "boolean", "default": False, "description": "The previous (crashed) container's log."}},
          ["namespace", "name"], [_NS, ("", "pods", _R), ("", "pods/log", _R)]),
    _spec("analyze_pod_logs", "LOW",
          "Scan a pod container's log for known failure signatures (OOM, panics, tracebacks, connection, DNS, TLS, "
          "auth, disk, config errors...), each with its line number and an explanation.",
          {"namespace": NAMESPACE, "name": POD, "container": CONTAINER,
           "tail": {"type": "integer", "minimum": 1, "maximum": 20000, "default": 2000},
           "previous": {"type": "boolean", "default": False}},
          ["namespace", "name"], [_NS, ("", "pods", _R), ("", "pods/log", _R)]),
    _spec("list_nodes", "LOW", "List nodes with readiness, schedulability, pressure conditions and versions.",
          {}, [], [("", "nodes", ("list",))]),
    _spec("describe_node", "LOW", "A node's conditions, capacity, allocatable resources, taints and pods.",
          {"name": NODE}, ["name"], [("", "nodes", _R), ("", "pods", ("list",))]),
    _spec("list_deployments", "LOW", "List deployments with desired, updated, ready and available replicas.",
          {"namespace": _label("Namespace; all namespaces if omitted.")}, [],
          [_NS, ("apps", "deployments", ("list",))]),
    _spec("describe_deployment", "LOW", "A deployment's strategy, containers, resources, conditions and ReplicaSets.",
          {"namespace": NAMESPACE, "name": DEPLOYMENT}, ["namespace", "name"],
          [_NS, ("apps", "deployments", _R), ("apps", "replicasets", ("list",)), ("", "events", ("list",))]),
    _spec("rollout_history", "LOW", "A deployment's revisions (from its ReplicaSets) with their images.",
          {"namespace": NAMESPACE, "name": DEPLOYMENT}, ["namespace", "name"],
          [_NS, ("apps", "deployments", _R), ("apps", "replicasets", ("list",))]),
    _spec("rollout_status", "LOW", "Whether a deployment's rollout is complete, progressing or stuck.",
          {"namespace": NAMESPACE, "name": DEPLOYMENT}, ["namespace", "name"],
          [_NS, ("apps", "deployments", _R)]),
    _spec("list_events", "LOW", "Recent events, newest first, optionally about one object.",
          {"namespace": _label("Namespace; all namespaces if omitted."),
           "object_name": _subdomain("Only events about the object with this name."),
           "warnings_only": {"type": "boolean", "default": False},
           "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
          [], [_NS, ("", "events", ("list",))]),
    _spec("list_namespaces", "LOW", "List namespaces and their phase.", {}, [], [("", "namespaces", ("list",))]),
    _spec("list_services", "LOW", "List services with type, cluster IP and ports.",
          {"namespace": _label("Namespace; all namespaces if omitted.")}, [],
          [_NS, ("", "services", ("list",))]),
    _spec("get_hpa", "LOW", "HorizontalPodAutoscalers with min/max/current/desired replicas and whether maxed out.",
          {"namespace": NAMESPACE, "name": _subdomain("HPA name; all in the namespace if omitted.")},
          ["namespace"], [_NS, ("autoscaling", "horizontalpodautoscalers", _L)]),
    _spec("query_prometheus", "LOW",
          "PromQL against the cluster's Prometheus: an instant query now, or with range (e.g. 1h) a range query "
          "ending now. E.g. container_memory_working_set_bytes{namespace=\"shop\"} before an OOM kill, or "
          "increase(kube_pod_container_status_restarts_total[1h]). At most 20 series of 60 points come back.",
          {"query": {"type": "string", "minLength": 1, "maxLength": 2000, "description": "A PromQL expression."},
           "range": {"type": "string", "pattern": DURATION, "maxLength": 10,
                     "description": "How far back a range query reaches, e.g. 30m, 6h; an instant query if omitted."},
           "step": {"type": "string", "pattern": DURATION, "maxLength": 10,
                    "description": "Resolution of a range query, e.g. 30s; range/60 if omitted."}},
          ["query"], []),
    # --- MEDIUM: reversible changes -----------------------------------------------------
    _spec("restart_pod", "MEDIUM",
          "Delete one pod that a controller owns, so the controller replaces it. Does nothing if the pod is "
          "already gone; refuses a pod without a controller (it would not come back).",
          {"namespace": NAMESPACE, "name": POD}, ["namespace", "name"],
          [_NS, ("", "pods", ("get", "delete"))]),
    _spec("restart_deployment", "MEDIUM",
          "Rollout restart: set the pod template's restartedAt annotation. Pass restarted_at to make a retry a no-op.",
          {"namespace": NAMESPACE, "name": DEPLOYMENT,
           "restarted_at": {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$",
                            "maxLength": 40, "description": "UTC timestamp to set; now if omitted."}},
          ["namespace", "name"], [_NS, ("apps", "deployments", ("get", "patch"))]),
    _spec("restart_workload", "MEDIUM",
          "Rollout restart of a Deployment, StatefulSet or DaemonSet (every pod replaced by its controller). "
          "Pass restarted_at to make a retry a no-op.",
          {"namespace": NAMESPACE, "kind": WORKLOAD_KIND, "name": _subdomain("The workload's name."),
           "restarted_at": RESTARTED_AT_ARG},
          ["namespace", "kind", "name"],
          [_NS, ("apps", "deployments", ("get", "patch")), ("apps", "statefulsets", ("get", "patch")),
           ("apps", "daemonsets", ("get", "patch"))]),
    _spec("scale_deployment", "MEDIUM", "Set a deployment's replica count (bounded by AIOPS_MAX_SCALE_REPLICAS).",
          {"namespace": NAMESPACE, "name": DEPLOYMENT,
           "replicas": {"type": "integer", "minimum": 0, "maximum": 1000}},
          ["namespace", "name", "replicas"], [_NS, ("apps", "deployments", ("get", "patch"))]),
    _spec("set_hpa_max_replicas", "MEDIUM", "Set an HPA's maxReplicas (bounded by AIOPS_MAX_HPA_REPLICAS).",
          {"namespace": NAMESPACE, "name": _subdomain("HPA name."),
           "max_replicas": {"type": "integer", "minimum": 1, "maximum": 1000}},
          ["namespace", "name", "max_replicas"],
          [_NS, ("autoscaling", "horizontalpodautoscalers", ("get", "patch"))]),
    _spec("cordon_node", "MEDIUM", "Mark a node unschedulable (running pods stay).",
          {"name": NODE}, ["name"], [("", "nodes", ("get", "patch"))]),
    _spec("uncordon_node", "MEDIUM", "Mark a node schedulable again.",
          {"name": NODE}, ["name"], [("", "nodes", ("get", "patch"))]),
    # --- HIGH: disruptive or hard to undo -----------------------------------------------
    _spec("drain_node", "HIGH",
          "Cordon a node and evict its pods through the eviction API (PodDisruptionBudgets are honoured; "
          "DaemonSet and mirror pods are skipped).",
          {"name": NODE, "grace_period_seconds": {"type": "integer", "minimum": 0, "maximum": 3600}},
          ["name"], [("", "nodes", ("get", "patch")), ("", "pods", ("list", "get")), ("", "pods/eviction", ("create",))]),
    _spec("rollback_deployment", "HIGH",
          "Roll a deployment back to a revision (the previous one if omitted) by restoring that ReplicaSet's pod "
          "template.",
          {"namespace": NAMESPACE, "name": DEPLOYMENT,
           "revision": {"type": "integer", "minimum": 1, "description": "Revision from rollout_history."}},
          ["namespace", "name"],
          [_NS, ("apps", "deployments", ("get", "patch")), ("apps", "replicasets", ("list",))]),
    _spec("patch_memory_limit", "HIGH",
          "Set one container's memory limit on a Deployment, StatefulSet or DaemonSet (bounded: at most "
          "AIOPS_MEMORY_LIMIT_MAX_FACTOR times the current limit). Give the workload, or a pod whose owning "
          "deployment is meant.",
          {"namespace": NAMESPACE, "kind": WORKLOAD_KIND | {"default": "Deployment"},
           "name": _subdomain("Workload name (or give pod)."),
           "pod": _subdomain("A pod of the deployment, instead of name."), "container": CONTAINER,
           "memory": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$", "maxLength": 20,
                      "description": "The new limit, e.g. 512Mi."}},
          ["namespace", "memory"],
          [_NS, ("apps", "deployments", ("get", "patch")), ("apps", "statefulsets", ("get", "patch")),
           ("apps", "daemonsets", ("get", "patch")), ("apps", "replicasets", _R), ("", "pods", _R)]),
    _spec("delete_pod_force", "HIGH",
          "Delete a pod immediately (grace period 0), e.g. one stuck Terminating. Does nothing if it is gone.",
          {"namespace": NAMESPACE, "name": POD}, ["namespace", "name"], [_NS, ("", "pods", ("get", "delete"))]),
]

TOOL_SPECS: dict[str, ToolSpec] = {spec.name: spec for spec in _SPECS}
READ_ONLY_TOOLS = frozenset(name for name, spec in TOOL_SPECS.items() if spec.risk == "LOW")
