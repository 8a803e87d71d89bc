"""The API resources the sandbox serves, with the discovery data kubectl and client-go read."""

from __future__ import annotations

from dataclasses import dataclass, field

READ = ("get", "list", "watch")
WRITE = ("create", "delete", "patch", "update")


@dataclass(frozen=True)
class Resource:
    group: str  # "" is the core group
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # Subresource name -> (group, version, kind, verbs) as discovery reports them.
    subresources: dict[str, tuple[str, str, str, tuple[str, ...]]] = field(default_factory=dict)
    # Field selectors the real API server accepts for this resource (beyond metadata.name/namespace).
    fields: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "namespace", "Namespace", False, READ + WRITE, ("ns",), fields=("status.phase",)),
    Resource(
        "", "v1", "pods", "pod", "Pod", True, READ + WRITE + ("deletecollection",), ("po",), ("all",),
        subresources={
            "log": ("", "v1", "Pod", ("get",)),
            "eviction": ("policy", "v1", "Eviction", ("create",)),
            "status": ("", "v1", "Pod", ("get", "patch", "update")),
        },
        fields=(
            "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
            "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName",
        ),
    ),
    Resource(
        "", "v1", "nodes", "node", "Node", False, READ + WRITE, ("no",),
        subresources={"status": ("", "v1", "Node", ("get", "patch", "update"))},
        fields=("spec.unschedulable",),
    ),
    Resource(
        "", "v1", "events", "event", "Event", True, READ + WRITE, ("ev",),
        fields=(
            "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
            "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
            "reason", "reportingComponent", "source", "type",
        ),
    ),
    Resource("", "v1", "services", "service", "Service", True, READ + WRITE, ("svc",), ("all",)),
    Resource("", "v1", "endpoints", "endpoints", "Endpoints", True, READ + WRITE, ("ep",)),
    Resource("", "v1", "configmaps", "configmap", "ConfigMap", True, READ + WRITE, ("cm",)),
    Resource("", "v1", "secrets", "secret", "Secret", True, READ + WRITE, (), fields=("type",)),
    Resource(
        "apps", "v1", "deployments", "deployment", "Deployment", True, READ + WRITE, ("deploy",), ("all",),
        subresources={
            "scale": ("autoscaling", "v1", "Scale", ("get", "patch", "update")),
            "status": ("apps", "v1", "Deployment", ("get", "patch", "update")),
        },
    ),
    Resource(
        "apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, READ + WRITE, ("rs",), ("all",),
        subresources={
            "scale": ("autoscaling", "v1", "Scale", ("get", "patch", "update")),
            "status": ("apps", "v1", "ReplicaSet", ("get", "patch", "update")),
        },
    ),
    Resource(
        "apps", "v1", "statefulsets", "statefulset", "StatefulSet", True, READ + WRITE, ("sts",), ("all",),
        subresources={
            "scale": ("autoscaling", "v1", "Scale", ("get", "patch", "update")),
            "status": ("apps", "v1", "StatefulSet", ("get", "patch", "update")),
        },
    ),
    Resource("apps", "v1", "daemonsets", "daemonset", "DaemonSet", True, READ + WRITE, ("ds",), ("all",)),
    Resource(
        "autoscaling", "v2", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler",
        True, READ + WRITE, ("hpa",), ("all",),
        subresources={"status": ("autoscaling", "v2", "HorizontalPodAutoscaler", ("get", "patch", "update"))},
    ),
    Resource(
        "batch", "v1", "jobs", "job", "Job", True, READ + WRITE, (), ("all",),
        subresources={"status": ("batch", "v1", "Job", ("get", "patch", "update"))},
        fields=("status.successful",),
    ),
    Resource("coordination.k8s.io", "v1", "leases", "lease", "Lease", True, READ + WRITE),
    Resource(
        "policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", True,
        READ + WRITE, ("pdb",),
        subresources={"status": ("policy", "v1", "PodDisruptionBudget", ("get", "patch", "update"))},
    ),
)

# Access reviews are answered, never stored: the sandbox has no RBAC, so whoever holds the token
# (on plain HTTP: whoever reaches the loopback port) may do everything.
REVIEWS: tuple[Resource, ...] = (
    Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "selfsubjectaccessreview",
             "SelfSubjectAccessReview", False, ("create",)),
    Resource("authorization.k8s.io", "v1", "subjectaccessreviews", "subjectaccessreview",
             "SubjectAccessReview", False, ("create",)),
)
RESOURCES += REVIEWS

# Served by k8s/sandbox/usage.py from the simulation, as metrics-server serves them through the
# aggregation layer; listed in discovery, never stored (their plurals clash with the core kinds').
METRICS: tuple[Resource, ...] = (
    Resource("metrics.k8s.io", "v1beta1", "nodes", "", "NodeMetrics", False, ("get", "list")),
    Resource("metrics.k8s.io", "v1beta1", "pods", "", "PodMetrics", True, ("get", "list")),
)

BY_PATH: dict[tuple[str, str, str], Resource] = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_PLURAL: dict[str, Resource] = {r.plural: r for r in RESOURCES}
BY_KIND: dict[str, Resource] = {r.kind: r for r in RESOURCES}


def group_versions() -> dict[str, list[str]]:
    """group -> versions, in the order discovery lists them (the preferred version first)."""
    out: dict[str, list[str]] = {}
    for resource in RESOURCES + METRICS:
        versions = out.setdefault(resource.group, [])
        if resource.version not in versions:
            versions.append(resource.version)
    # Eviction is served under policy/v1 as a pods subresource; policy exists for PDBs anyway.
    return out


def resource_list(group: str, version: str) -> dict[str, object]:
    """The APIResourceList for one group version (the legacy discovery document)."""
    resources: list[dict[str, object]] = []
    for r in RESOURCES + METRICS:
        if (r.group, r.version) != (group, version):
            continue
        entry: dict[str, object] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        resources.append(entry)
        for sub, (sub_group, sub_version, sub_kind, sub_verbs) in r.subresources.items():
            sub_entry: dict[str, object] = {
                "name": f"{r.plural}/{sub}",
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": sub_kind,
                "verbs": list(sub_verbs),
            }
            if (sub_group, sub_version) != (group, version):
                sub_entry["group"] = sub_group
                sub_entry["version"] = sub_version
            resources.append(sub_entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
