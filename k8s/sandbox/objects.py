"""Builders for the objects a real cluster holds, in the API's JSON shapes."""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any

import orjson

from k8s.sandbox.store import Obj

# The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


@functools.lru_cache(maxsize=4096)
def parse_bytes(quantity: str | int | None) -> int:
    if quantity is None or quantity == "":
        return 0
    m = _QUANTITY.match(str(quantity))
    if not m or m.group(2) not in _BINARY:
        raise ValueError(f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {quantity!r}")
    return int(float(m.group(1)) * _BINARY[m.group(2)])


@functools.lru_cache(maxsize=4096)
def parse_cpu(quantity: str | int | None) -> int:
    """Millicores."""
    if quantity is None or quantity == "":
        return 0
    text = str(quantity)
    if text.endswith("m"):
        return int(float(text[:-1]))
    return int(float(text) * 1000)


def format_mi(n_bytes: int) -> str:
    return f"{-(-n_bytes // 2**20)}Mi"


def safe_hash(data: Any, length: int = 10) -> str:
    digest = hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).digest()
    return "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in digest[:length])


def _prune(node: Any) -> Any:
    """Drop nulls and empty maps/lists: Go clients send `creationTimestamp: null`, `resources: {}`
    where we store nothing, and the real controller hashes the typed struct, blind to both."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                value = _prune(value)
                if not value:
                    continue
            elif value is None:
                continue
            out[key] = value
        return out
    if isinstance(node, list):
        return [_prune(v) if isinstance(v, (dict, list)) else v for v in node]
    return node


def template_hash(template: Obj) -> str:
    """pod-template-hash: what the deployment controller derives from the pod template."""
    clean = _prune(template)
    (clean.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
    return safe_hash(clean)


def config_hash(template: Obj) -> str:
    """The template without the restart annotation: a fault tied to a bad configuration
    survives `rollout restart` but not a change of image, resources or command."""
    clean = _prune(template)
    meta = clean.get("metadata") or {}
    meta.get("labels", {}).pop("pod-template-hash", None)
    (meta.get("annotations") or {}).pop(RESTARTED_AT, None)
    if meta.get("annotations") == {}:
        meta.pop("annotations")
    return safe_hash(clean)


def container_id(*parts: str) -> str:
    return "containerd://" + hashlib.sha256("/".join(parts).encode()).hexdigest()


@functools.lru_cache(maxsize=4096)
def image_id(image: str) -> str:
    repo = image.rsplit(":", 1)[0]
    return f"{repo}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def owner_ref(owner: Obj, *, controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def controller_of(obj: Obj) -> dict[str, Any] | None:
    for ref in obj["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


NODE_LEASE_NAMESPACE = "kube-node-lease"
NODE_LEASE_SECONDS = 40  # the kubelet's default lease duration; it renews every quarter of it


def node_lease(node: Obj, renew_time: str) -> Obj:
    """The Lease a node's kubelet holds and renews (what `kubectl describe node` reads)."""
    name = node["metadata"]["name"]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": NODE_LEASE_NAMESPACE,
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}]},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": NODE_LEASE_SECONDS, "renewTime": renew_time},
    }


def namespace(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def node(name: str, index: int, *, cpu: str = "4", memory: str = "16Gi", pods: int = 110, zone: str = "zone-a") -> Obj:
    address = f"10.0.{index // 250}.{index % 250 + 10}"
    cidr = f"10.{244 + index // 256}.{index % 256}.0/24"  # a /24 per node, from 10.244.0.0/14
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "sandbox.standard-4",
                "topology.kubernetes.io/zone": zone,
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"},
        },
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr], "providerID": f"sandbox://{name}"},
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "102400Mi"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "94000Mi"},
            "conditions": [],  # filled by the node controller
            "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": safe_hash(name, 32),
                "systemUUID": safe_hash(name + "-uuid", 32),
                "bootID": safe_hash(name + "-boot", 32),
                "kernelVersion": "6.1.0-sandbox",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.24",
                "kubeletVersion": "v1.32.4",
                "kubeProxyVersion": "v1.32.4",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": [],
        },
    }


def container(
    name: str,
    image: str,
    *,
    cpu: str = "100m",
    memory_request: str = "128Mi",
    memory_limit: str = "256Mi",
    port: int | None = 8080,
    probes: bool = True,
    env: list[dict[str, str]] | None = None,
) -> Obj:
    spec: Obj = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": {"cpu": cpu, "memory": memory_request}, "limits": {"memory": memory_limit}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    if env:
        spec["env"] = env
    if port:
        spec["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        if probes:
            probe = {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"}, "periodSeconds": 10,
                     "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3}
            spec["readinessProbe"] = {**probe, "httpGet": {**probe["httpGet"], "path": "/ready"}}
            spec["livenessProbe"] = probe
    return spec


def pod_spec(containers: list[Obj], *, empty_dir: bool = False) -> Obj:
    spec: Obj = {
        "containers": containers,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        ],
    }
    if empty_dir:
        spec["volumes"] = [{"name": "cache", "emptyDir": {}}]
        for c in containers:
            c.setdefault("volumeMounts", []).append({"name": "cache", "mountPath": "/var/cache/app"})
    return spec


def deployment(
    ns: str,
    name: str,
    containers: list[Obj],
    *,
    replicas: int = 2,
    runtime: str = "python",
    empty_dir: bool = False,
    labels: dict[str, str] | None = None,
) -> Obj:
    app_labels = {"app.kubernetes.io/name": name, **(labels or {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": dict(app_labels), "annotations": {}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": dict(app_labels), "annotations": {"sandbox.aiops.dev/runtime": runtime}},
                "spec": pod_spec(containers, empty_dir=empty_dir),
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": {},
    }


def service(ns: str, name: str, selector: dict[str, str], port: int, index: int) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": dict(selector)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "clusterIP": f"10.96.{index // 250}.{index % 250 + 10}",
            "clusterIPs": [f"10.96.{index // 250}.{index % 250 + 10}"],
            "ports": [{"name": "http", "port": 80, "targetPort": port, "protocol": "TCP"}],
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    }


def hpa(ns: str, name: str, target: str, *, min_replicas: int, max_replicas: int, cpu_target: int = 70) -> Obj:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu_target}}}],
        },
        "status": {},
    }


def pdb(ns: str, name: str, selector: dict[str, str], *, min_available: int | None = None, max_unavailable: int | None = None) -> Obj:
    spec: Obj = {"selector": {"matchLabels": selector}}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name, "namespace": ns},
            "spec": spec, "status": {}}


def job(ns: str, name: str, image: str, *, runtime: str = "python", backoff_limit: int = 3) -> Obj:
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": backoff_limit,
            "completionMode": "NonIndexed",
            "suspend": False,
            "podReplacementPolicy": "TerminatingOrFailed",
            "manualSelector": False,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "pending"}},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": {"sandbox.aiops.dev/runtime": runtime}},
                "spec": {**pod_spec([container(name, image, port=None, probes=False)]), "restartPolicy": "Never"},
            },
        },
        "status": {},
    }


def daemonset(ns: str, name: str, image: str) -> Obj:
    labels = {"app.kubernetes.io/name": name}
    spec = pod_spec([container(name, image, cpu="50m", memory_request="64Mi", memory_limit="128Mi", port=9100, probes=False)])
    spec["tolerations"] = [{"operator": "Exists"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels), "annotations": {"deprecated.daemonset.template.generation": "1"}},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": dict(labels), "annotations": {"sandbox.aiops.dev/runtime": "go"}}, "spec": spec},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            "revisionHistoryLimit": 10,
        },
        "status": {},
    }
