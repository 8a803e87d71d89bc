"""What a sandbox holds at start: `demo`, `empty`, and the scale generator."""

from __future__ import annotations

import gc
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from k8s.sandbox import faults
from k8s.sandbox import objects as o
from k8s.sandbox.store import copy

if TYPE_CHECKING:
    from k8s.sandbox.simulation import Simulation

SCENARIOS = ("demo", "empty")

# The demo's workloads: (namespace, name, runtime, image, replicas, memory limit, empty dir).
DEMO_APPS = (
    ("shop", "frontend", "node", "registry.example.com/shop/frontend:2.4.1", 3, "256Mi", True),
    ("shop", "cart", "go", "ghcr.io/example/cart:1.8.2", 2, "256Mi", False),
    ("shop", "checkout", "python", "registry.example.com/shop/checkout:1.4.0", 2, "256Mi", False),
    ("payments", "payments-api", "java", "registry.example.com/payments/payments-api:3.2.1", 2, "768Mi", False),
    ("payments", "ledger", "python", "registry.example.com/payments/ledger:0.9.3", 2, "256Mi", False),
    ("data", "report-builder", "java", "registry.example.com/data/report-builder:5.0.2", 1, "256Mi", False),
)
DEMO_NODES = ("node-1", "node-2", "node-3", "node-4")
DEMO_NOT_READY_NODE = "node-4"
DEMO_CRASH_LOOP = "payments/ledger"
DEMO_OOM = "data/report-builder"
# The demo cluster has been up a while: objects seeded "now" would sit inside every detector's
# grace period (a deployment younger than a minute is still rolling out).
DEMO_AGE_S = 3 * 24 * 3600
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def load(sim: Simulation, scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise faults.FaultError(f"unknown scenario {scenario!r}; choose one of: {', '.join(SCENARIOS)}")
    with sim.lock:
        sim.faults.clear()
        sim.cleared.clear()
        sim.hpa_demand.clear()
        sim.store.clear()
        sim._pod_keys.clear()
        sim._event_index.clear()
        sim._ip_next.clear()
        sim._config_cache.clear()
        sim._template_hashes.clear()
        sim._running_prototypes.clear()
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            sim.store.create("namespaces", o.namespace(ns))
        sim.store.create("services", o.service("default", "kubernetes", {}, 443, 0))
        if scenario == "demo":
            _demo(sim)
        sim.reconcile()
        _backdate(sim, DEMO_AGE_S)
        sim._node_leases(tick=False)  # a NotReady node's lease dates from its backdated last heartbeat


def _demo(sim: Simulation) -> None:
    for ns in ("shop", "payments", "data", "monitoring"):
        sim.store.create("namespaces", o.namespace(ns))
    for i, name in enumerate(DEMO_NODES):
        sim.store.create("nodes", o.node(name, i + 1, zone="zone-a" if i % 2 == 0 else "zone-b"))
    sim.reconcile()
    sim.store.create("daemonsets", o.daemonset("monitoring", "node-exporter", "quay.io/prometheus/node-exporter:v1.8.2"))
    for i, (ns, name, runtime, image, replicas, memory, empty_dir) in enumerate(DEMO_APPS):
        c = o.container(name, image, memory_limit=memory, memory_request="128Mi" if memory == "256Mi" else "512Mi")
        sim.store.create("deployments", o.deployment(ns, name, [c], replicas=replicas, runtime=runtime, empty_dir=empty_dir))
        sim.store.create("services", o.service(ns, name, {"app.kubernetes.io/name": name}, 8080, i + 1))
    sim.store.create("horizontalpodautoscalers", o.hpa("shop", "cart", "cart", min_replicas=2, max_replicas=6))
    sim.store.create("poddisruptionbudgets", o.pdb("payments", "payments-api", {"app.kubernetes.io/name": "payments-api"}, min_available=1))
    sim.store.create("jobs", o.job("data", "nightly-export", "registry.example.com/data/exporter:2.1.0"))
    sim.reconcile()
    # Revision history for `rollout history|undo`: checkout went 1.4.0 -> 1.5.0 -> 1.5.1.
    for version in ("1.5.0", "1.5.1"):
        deploy = copy(sim.store.get("deployments", "shop", "checkout"))  # type: ignore[arg-type]
        image = f"registry.example.com/shop/checkout:{version}"
        deploy["spec"]["template"]["spec"]["containers"][0]["image"] = image
        deploy["metadata"]["annotations"][o.CHANGE_CAUSE] = f"kubectl set image deployment/checkout checkout={image}"
        sim.store.put("deployments", deploy)
        sim.reconcile()
    faults.inject(sim, "crash_loop", DEMO_CRASH_LOOP, transient=True, pods=1)  # one crash-looping pod of two
    faults.inject(sim, "oom_killed", DEMO_OOM, need="384Mi")
    faults.inject(sim, "not_ready_node", DEMO_NOT_READY_NODE, status="Unknown")


def _shift(node: Any, seconds: int, *, key: str = "") -> Any:
    if isinstance(node, dict):
        # Last terminations and event times stay recent: the demo's crash loops are happening now.
        return {k: v if k in ("lastState", "lastTimestamp", "lastHeartbeatTime") else _shift(v, seconds, key=k)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_shift(v, seconds, key=key) for v in node]
    if isinstance(node, str) and _STAMP.match(node):
        then = datetime.strptime(node, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) - timedelta(seconds=seconds)
        return then.strftime("%Y-%m-%dT%H:%M:%SZ")
    return node


def _backdate(sim: Simulation, seconds: int) -> None:
    """Move every timestamp of the seeded objects `seconds` into the past."""
    for plural in sim.store.objects:
        if plural == "events":
            continue
        for obj in sim.store.all(plural):
            aged = _shift(obj, seconds)
            if aged != obj:
                sim.store.put(plural, aged)


def generate(sim: Simulation, *, pods: int, nodes: int | None = None, deployments: int | None = None,
             namespaces: int = 10) -> dict[str, int]:
    """Add `pods` healthy pods (in deployments across namespaces) on enough nodes to hold them."""
    if pods < 1:
        raise faults.FaultError(f"pods={pods} must be at least 1")
    n_deploy = deployments or max(1, pods // 10)
    n_nodes = nodes or max(3, -(-pods // 200))
    per_node = max(110, -(-pods // n_nodes) + 10)
    with sim.lock:
        sim.bulk = True
        # Seeding allocates millions of small objects that all live on: the cyclic collector
        # would rescan them again and again (4x the time), and later scan them on every
        # collection in this process, so they go to the permanent generation afterwards.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            base = len(sim.store.all("nodes"))
            for i in range(n_nodes):
                sim.store.create("nodes", o.node(f"scale-node-{base + i:04d}", base + i + 1, cpu="256", memory="1024Gi", pods=per_node))
            sim.reconcile()
            for n in range(namespaces):
                if sim.store.get("namespaces", "", f"scale-{n:02d}") is None:
                    sim.store.create("namespaces", o.namespace(f"scale-{n:02d}"))
            remaining = pods
            for d in range(n_deploy):
                replicas = remaining // (n_deploy - d)
                remaining -= replicas
                ns = f"scale-{d % namespaces:02d}"
                runtime = ("python", "go", "node", "java")[d % 4]
                c = o.container(f"svc-{d:05d}", f"registry.example.com/scale/svc-{d:05d}:1.0.{d % 7}",
                                cpu="10m", memory_request="32Mi", memory_limit="128Mi")
                sim.store.create("deployments", o.deployment(ns, f"svc-{d:05d}", [c], replicas=replicas, runtime=runtime))
            sim.reconcile()
        finally:
            sim.bulk = False
            if gc_was_enabled:
                gc.enable()
            gc.freeze()
    return {"pods": pods, "nodes": n_nodes, "deployments": n_deploy}


def crowd_node(sim: Simulation, *, workloads: int, replicas: int = 2, node: str = "node-crowded", spare_nodes: int = 1,
               namespaces: int = 3) -> dict[str, Any]:
    """A node that holds every pod of `workloads` deployments (and `spare_nodes` empty nodes with
    room to take them), aged past the detectors' grace periods: inject `not_ready_node` on `node`
    and every one of those deployments loses all its available replicas at once.

    Adds to what the sandbox holds (load `empty` first for a cluster of just these). The
    deployments are placed while the spare nodes are cordoned, which are uncordoned afterwards.
    """
    if workloads < 1 or replicas < 1:
        raise faults.FaultError(f"workloads={workloads} and replicas={replicas} must be at least 1")
    pods = workloads * replicas
    with sim.lock:
        sim.bulk = True
        try:
            base = len(sim.store.all("nodes"))
            sim.store.create("nodes", o.node(node, base + 1, cpu="512", memory="2048Gi", pods=pods + 20))
            spares = [f"{node}-spare-{i}" for i in range(spare_nodes)]
            for i, name in enumerate(spares):
                spare = o.node(name, base + 2 + i, cpu="512", memory="2048Gi", pods=pods + 20)
                spare["spec"]["unschedulable"] = True
                sim.store.create("nodes", spare)
            sim.reconcile()
            created = []
            for n in range(namespaces):
                if sim.store.get("namespaces", "", f"crowd-{n:02d}") is None:
                    sim.store.create("namespaces", o.namespace(f"crowd-{n:02d}"))
            for d in range(workloads):
                ns, name = f"crowd-{d % namespaces:02d}", f"app-{d:04d}"
                c = o.container(name, f"registry.example.com/crowd/{name}:1.0.0", cpu="10m", memory_request="32Mi",
                                memory_limit="128Mi")
                sim.store.create("deployments", o.deployment(ns, name, [c], replicas=replicas))
                created.append(f"{ns}/{name}")
            sim.reconcile()
            _backdate(sim, DEMO_AGE_S)
            for name in spares:
                spare = copy(sim.store.get("nodes", "", name))  # type: ignore[arg-type]
                spare["spec"]["unschedulable"] = False
                sim.store.put("nodes", spare)
            sim.reconcile()
            sim._node_leases(tick=False)
        finally:
            sim.bulk = False
    return {"node": node, "spare_nodes": spares, "deployments": created, "pods": pods}
