"""Faults: what each one does to the cluster, which pods it touches, and what clears it.

| type                 | target              | clears when                                                    |
|----------------------|---------------------|----------------------------------------------------------------|
| crash_loop           | ns/deployment (pod) | transient (default): its pods are restarted (deleted, or a      |
|                      |                     | `rollout restart`); persistent: the template changes (rollback) |
| oom_killed           | ns/deployment       | the container's memory limit is raised above the need          |
| image_pull_failure   | ns/deployment       | the template changes (rollback, a new image)                   |
| unschedulable        | ns/deployment       | the template changes                                           |
| probe_failure        | ns/deployment       | the template changes (readiness by default; `probe=liveness`:  |
|                      |                     | the liveness probe kills and restarts the container)            |
| replication_failure  | ns/deployment       | `rollout undo` to a good revision                              |
| hpa_maxed            | ns/hpa (or its      | maxReplicas is raised above the demand                         |
|                      | deployment)         |                                                                |
| failed_job           | ns/job              | the job is deleted                                             |
| evicted              | ns/deployment       | the evicted pods are deleted                                   |
| not_ready_node       | node                | only `fault clear` (cordon + drain move its pods elsewhere)    |

Every fault also clears with `fault clear TARGET`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from k8s.sandbox import objects as o
from k8s.sandbox.kubelet import probe_allowance
from k8s.sandbox.metrics import SANDBOX_FAULTS_ACTIVE, SANDBOX_FAULTS_CLEARED, SANDBOX_OBJECTS
from k8s.sandbox.store import Obj, copy, now_iso

if TYPE_CHECKING:
    from k8s.sandbox.simulation import Simulation

log = structlog.get_logger(__name__)

FAULT_TYPES = (
    "crash_loop",
    "oom_killed",
    "image_pull_failure",
    "unschedulable",
    "not_ready_node",
    "replication_failure",
    "probe_failure",
    "hpa_maxed",
    "failed_job",
    "evicted",
)
CONFIG_FAULTS = ("image_pull_failure", "unschedulable", "probe_failure", "replication_failure")


class FaultError(ValueError):
    """A fault request names an unknown type, a missing target or a bad option."""


@dataclass
class Fault:
    type: str
    target: str  # "namespace/name", or a node name
    opts: dict[str, Any] = field(default_factory=dict)
    injected_at: str = field(default_factory=now_iso)
    pod_uids: set[str] = field(default_factory=set)
    bad_configs: set[str] = field(default_factory=set)
    # probe_failure: when the probe started failing, back-dated past the probe's start-up
    # allowance so the pods look as a kubelet shows them once the failure is established.
    onset: datetime | None = None

    def describe(self) -> dict[str, Any]:
        return {"type": self.type, "target": self.target, "options": dict(self.opts), "injected_at": self.injected_at}


def _split(target: str) -> tuple[str, str]:
    if "/" not in target:
        raise FaultError(f"target {target!r} must be NAMESPACE/NAME")
    ns, name = target.split("/", 1)
    if not ns or not name:
        raise FaultError(f"target {target!r} must be NAMESPACE/NAME")
    return ns, name


def resolve_deployment(sim: Simulation, target: str) -> Obj:
    """A deployment (else a statefulset) named by ns/name, or the one that owns the pod named so."""
    ns, name = _split(target)
    deploy = sim.workload(ns, name)
    if deploy is None:
        pod = sim.store.get("pods", ns, name)
        if pod is not None:
            _, deploy = sim.pod_workload(pod)
    if deploy is None:
        raise FaultError(f"no deployment or statefulset (or pod of one) named {target!r}")
    return deploy


def _main_container(deploy: Obj, name: str | None) -> Obj:
    containers = deploy["spec"]["template"]["spec"]["containers"]
    if name is None:
        return containers[0]
    for c in containers:
        if c["name"] == name:
            return c
    raise FaultError(f"deployment {deploy['metadata']['name']!r} has no container {name!r}; it has {[c['name'] for c in containers]}")


def current_config(sim: Simulation, deploy: Obj) -> str:
    return o.config_hash(deploy["spec"]["template"])


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise FaultError(f"option {name}={value!r} is not a boolean")


def inject(sim: Simulation, ftype: str, target: str, **opts: Any) -> Fault:
    if ftype not in FAULT_TYPES:
        raise FaultError(f"unknown fault type {ftype!r}; choose one of: {', '.join(FAULT_TYPES)}")
    with sim.lock:
        fault = _build(sim, ftype, target, opts)
        sim.faults = [f for f in sim.faults if not (f.type == fault.type and f.target == fault.target)]
        sim.faults.append(fault)
        sim.reconcile()
        log.info("sandbox.fault_injected", fault_type=ftype, target=fault.target, options=fault.opts)
        return fault


def _build(sim: Simulation, ftype: str, target: str, opts: dict[str, Any]) -> Fault:
    if ftype == "not_ready_node":
        if sim.store.get("nodes", "", target) is None:
            raise FaultError(f"no node named {target!r}")
        status = str(opts.get("status", "Unknown"))
        if status not in ("Unknown", "False"):
            raise FaultError(f"option status={status!r} must be Unknown or False")
        return Fault(ftype, target, {"status": status})
    if ftype == "failed_job":
        ns, name = _split(target)
        job = sim.store.get("jobs", ns, name)
        if job is None:
            raise FaultError(f"no job named {target!r}")
        _rerun_job(sim, job)
        return Fault(ftype, target, {})
    if ftype == "hpa_maxed":
        ns, name = _split(target)
        hpa = sim.store.get("horizontalpodautoscalers", ns, name)
        if hpa is None:
            hpa = next((h for h in sim.store.all("horizontalpodautoscalers", ns)
                        if h["spec"]["scaleTargetRef"].get("name") == name), None)
        if hpa is None:
            raise FaultError(f"no HPA named {target!r} (nor one that scales a deployment of that name)")
        max_r = hpa["spec"]["maxReplicas"]
        demand = int(opts.get("demand", max_r + 3))
        if demand <= max_r:
            raise FaultError(f"option demand={demand} must be above the HPA's maxReplicas ({max_r})")
        key = (ns, hpa["metadata"]["name"])
        sim.hpa_demand[key] = demand
        return Fault(ftype, f"{ns}/{hpa['metadata']['name']}", {"demand": demand})

    deploy = resolve_deployment(sim, target)
    ns, name = deploy["metadata"]["namespace"], deploy["metadata"]["name"]
    canonical = f"{ns}/{name}"
    pods = [p for p in sim.deployment_pods(deploy) if p["status"].get("phase") in ("Pending", "Running")]
    if ftype == "crash_loop":
        transient = _bool(opts.get("transient", True), "transient")
        exit_code = int(opts.get("exit_code", 1))
        fault = Fault(ftype, canonical, {"transient": transient, "exit_code": exit_code,
                                         "restarts": int(opts.get("restarts", 4))})
        if transient:
            # A pod named as the target, or `pods=N` of them, crash; by default all of them.
            named = [p for p in pods if f"{ns}/{p['metadata']['name']}" == target]
            chosen = named or sorted(pods, key=lambda p: p["metadata"]["name"])[: int(opts.get("pods", len(pods)))]
            if not chosen:
                raise FaultError(f"{canonical} has no pod to crash")
            fault.opts["pods"] = len(chosen)
            fault.pod_uids = {p["metadata"]["uid"] for p in chosen}
        else:
            fault.bad_configs = {current_config(sim, deploy)}
        return fault
    if ftype == "oom_killed":
        container = _main_container(deploy, opts.get("container"))
        limit = o.parse_bytes(((container.get("resources") or {}).get("limits") or {}).get("memory"))
        if not limit:
            raise FaultError(f"container {container['name']!r} of {canonical} has no memory limit to exceed")
        try:
            need = o.parse_bytes(opts["need"]) if "need" in opts else int(limit * 1.5)
        except ValueError as exc:
            raise FaultError(f"option need: {exc}") from None
        if need <= limit:
            raise FaultError(f"option need={o.format_mi(need)} must be above the memory limit ({container['resources']['limits']['memory']})")
        return Fault(ftype, canonical, {"container": container["name"], "need": o.format_mi(need),
                                        "restarts": int(opts.get("restarts", 4))})
    if ftype == "evicted":
        count = max(1, int(opts.get("count", 1)))
        victims = [p for p in pods if p["spec"].get("nodeName")][:count]
        if not victims:
            raise FaultError(f"{canonical} has no running pod to evict")
        fault = Fault(ftype, canonical, {"count": len(victims)})
        for pod in victims:
            _mark_evicted(sim, pod)
            fault.pod_uids.add(pod["metadata"]["uid"])
        return fault
    if ftype == "replication_failure":
        container = _main_container(deploy, opts.get("container"))
        image = str(opts.get("image") or _broken_image(container["image"]))
        updated = copy(deploy)
        for c in updated["spec"]["template"]["spec"]["containers"]:
            if c["name"] == container["name"]:
                c["image"] = image
        updated["metadata"].setdefault("annotations", {})[o.CHANGE_CAUSE] = f"kubectl set image deployment/{name} {container['name']}={image}"
        sim.store.put("deployments" if deploy["kind"] == "Deployment" else "statefulsets", updated)
        mode = str(opts.get("mode", "crash_loop"))
        if mode not in ("crash_loop", "image_pull_failure"):
            raise FaultError(f"option mode={mode!r} must be crash_loop or image_pull_failure")
        return Fault(ftype, canonical, {"image": image, "mode": mode}, bad_configs={current_config(sim, updated)})
    if ftype == "probe_failure":
        return _probe_fault(sim, deploy, canonical, pods, opts)
    if ftype in CONFIG_FAULTS:
        fault = Fault(ftype, canonical, {}, bad_configs={current_config(sim, deploy)})
        if ftype in ("unschedulable", "image_pull_failure"):
            # A running container neither re-pulls nor gets unscheduled: the fault shows on
            # replacement pods, so the current ones are replaced (as by a reschedule).
            for pod in pods:
                sim.delete_pod(pod)
        return fault
    raise FaultError(f"unknown fault type {ftype!r}")


PROBE_MARGIN_S = 60


def _probe_fault(sim: Simulation, deploy: Obj, canonical: str, pods: list[Obj], opts: dict[str, Any]) -> Fault:
    probe = str(opts.get("probe", "readiness"))
    if probe not in ("readiness", "liveness"):
        raise FaultError(f"option probe={probe!r} must be readiness or liveness")
    container = _main_container(deploy, opts.get("container"))
    spec = container.get(f"{probe}Probe")
    if not spec:
        raise FaultError(f"container {container['name']!r} of {canonical} has no {probe} probe to fail")
    fault = Fault("probe_failure", canonical, {"probe": probe, "container": container["name"]},
                  bad_configs={current_config(sim, deploy)})
    if probe == "liveness":
        fault.opts["restarts"] = int(opts.get("restarts", 4))
    # The pods running now have been failing for a while (past the allowance, so a detector that
    # rightly waits it out reports them at once); replacements start failing when they start.
    fault.onset = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=probe_allowance(spec) + PROBE_MARGIN_S)
    fault.pod_uids = {p["metadata"]["uid"] for p in pods}
    return fault


def _broken_image(image: str) -> str:
    repo, _, tag = image.rpartition(":")
    if not repo:
        return f"{image}:v0-rc.1"
    return f"{repo}:{tag}-rc.1"


def _mark_evicted(sim: Simulation, pod: Obj) -> None:
    message = ("The node was low on resource: memory. Threshold quantity: 100Mi, available: 87140Ki. "
               f"Container {pod['spec']['containers'][0]['name']} was using 512Mi, request is "
               f"{((pod['spec']['containers'][0].get('resources') or {}).get('requests') or {}).get('memory', '0')}, "
               "has larger consumption of memory. ")
    updated = copy(pod)
    status = updated["status"]
    status["phase"] = "Failed"
    status["reason"] = "Evicted"
    status["message"] = message
    conds = [c for c in status.get("conditions") or () if c["type"] not in ("Ready", "ContainersReady", "DisruptionTarget")]
    now = now_iso()
    conds.insert(0, {"type": "DisruptionTarget", "status": "True", "lastProbeTime": None, "lastTransitionTime": now,
                     "reason": "TerminationByKubelet", "message": message})
    conds += [{"type": "Ready", "status": "False", "lastProbeTime": None, "lastTransitionTime": now, "reason": "PodFailed"},
              {"type": "ContainersReady", "status": "False", "lastProbeTime": None, "lastTransitionTime": now, "reason": "PodFailed"}]
    status["conditions"] = conds
    for cs in status.get("containerStatuses") or ():
        started = ((cs.get("state") or {}).get("running") or {}).get("startedAt", now)
        cs["state"] = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                      "message": "The container could not be located when the pod was terminated",
                                      "startedAt": started, "finishedAt": now}}
        cs["ready"] = False
        cs["started"] = False
    sim.store.put("pods", updated)
    sim._pod_keys[pod["metadata"]["uid"]] = ("terminal",)
    sim.event(updated, "Warning", "Evicted", message.strip(), "kubelet", host=pod["spec"].get("nodeName", ""))


def _rerun_job(sim: Simulation, job: Obj) -> None:
    """Drop a job's pods and status so the job controller runs it again."""
    for pod in sim.store.owned_by("pods", job["metadata"]["uid"], job["metadata"]["namespace"]):
        sim.delete_pod(pod)
    updated = copy(job)
    updated["status"] = {}
    sim.store.put("jobs", updated)


def clear(sim: Simulation, target: str) -> list[Fault]:
    """Clear every fault on a target (a node, ns/name of a workload, or a pod of one)."""
    with sim.lock:
        names = {target}
        if "/" in target:
            try:
                deploy = resolve_deployment(sim, target)
                names.add(f"{deploy['metadata']['namespace']}/{deploy['metadata']['name']}")
                hpas = [h for h in sim.store.all("horizontalpodautoscalers", deploy["metadata"]["namespace"])
                        if h["spec"]["scaleTargetRef"].get("name") == deploy["metadata"]["name"]]
                names.update(f"{h['metadata']['namespace']}/{h['metadata']['name']}" for h in hpas)
            except FaultError:
                pass
        cleared = [f for f in sim.faults if f.target in names]
        if not cleared:
            raise FaultError(f"no active fault on {target!r}")
        sim.faults = [f for f in sim.faults if f.target not in names]
        for fault in cleared:
            _undo(sim, fault)
            log.info("sandbox.fault_cleared", fault_type=fault.type, target=fault.target, by="fault clear")
            sim.cleared.append((fault, "fault clear"))
            SANDBOX_FAULTS_CLEARED.labels(type=fault.type, by="fault clear").inc()
        sim.reconcile()
        return cleared


def _undo(sim: Simulation, fault: Fault) -> None:
    if fault.type == "evicted":
        for pod in list(sim.store.all("pods", fault.target.split("/")[0])):
            if pod["metadata"]["uid"] in fault.pod_uids:
                sim.delete_pod(pod)
    elif fault.type == "failed_job":
        ns, name = _split(fault.target)
        job = sim.store.get("jobs", ns, name)
        if job is not None:
            _rerun_job(sim, job)
    elif fault.type == "hpa_maxed":
        ns, name = _split(fault.target)
        hpa = sim.store.get("horizontalpodautoscalers", ns, name)
        # The load is gone: the HPA settles back to its minimum.
        sim.hpa_demand[(ns, name)] = hpa["spec"].get("minReplicas", 1) if hpa else 1


def clear_all(sim: Simulation) -> None:
    with sim.lock:
        for fault in list(sim.faults):
            sim.faults.remove(fault)
            _undo(sim, fault)
        sim.reconcile()


# --- which faults touch what ---------------------------------------------------------------
def deployment_faults(sim: Simulation, deploy: Obj) -> list[Fault]:
    key = f"{deploy['metadata']['namespace']}/{deploy['metadata']['name']}"
    return [f for f in sim.faults if f.target == key]


def pod_faults(sim: Simulation, pod: Obj) -> list[Fault]:
    if not sim.faults:
        return []
    config, deploy = sim.pod_workload(pod)
    out = [f for f in sim.faults if pod["metadata"]["uid"] in f.pod_uids and f.type == "crash_loop"]
    if deploy is None or config is None:
        return out
    for f in deployment_faults(sim, deploy):
        if f.type == "crash_loop" and not f.opts.get("transient") and config in f.bad_configs:
            out.append(f)
        elif f.type in CONFIG_FAULTS and config in f.bad_configs:
            out.append(f)
        elif f.type == "oom_killed":
            container = next((c for c in pod["spec"]["containers"] if c["name"] == f.opts["container"]), None)
            limit = o.parse_bytes(((container or {}).get("resources") or {}).get("limits", {}).get("memory"))
            if container is not None and (not limit or limit <= o.parse_bytes(f.opts["need"])):
                out.append(f)
    return out


_PRIORITY = ("unschedulable", "image_pull_failure", "replication_failure", "crash_loop", "oom_killed", "probe_failure")


def pod_state(sim: Simulation, pod: Obj) -> tuple[str, Fault | None]:
    """The state the kubelet reports for a scheduled pod, and the fault behind it."""
    faults = pod_faults(sim, pod)
    for ftype in _PRIORITY:
        for f in faults:
            if f.type == ftype:
                if ftype == "replication_failure":
                    return f.opts.get("mode", "crash_loop"), f
                if ftype == "probe_failure" and f.opts.get("probe") == "liveness":
                    return "liveness_kill", f
                return ftype, f
    return "running", None


def job_fault(sim: Simulation, job: Obj) -> Fault | None:
    key = f"{job['metadata']['namespace']}/{job['metadata']['name']}"
    return next((f for f in sim.faults if f.type == "failed_job" and f.target == key), None)


def resolve(sim: Simulation) -> None:
    """Drop the faults whose remediation has happened (each logged with what cleared it)."""
    keep: list[Fault] = []
    for fault in sim.faults:
        why = _cleared_by(sim, fault)
        if why:
            log.info("sandbox.fault_cleared", fault_type=fault.type, target=fault.target, by=why)
            sim.cleared.append((fault, why))
            SANDBOX_FAULTS_CLEARED.labels(type=fault.type, by=why).inc()
        else:
            keep.append(fault)
    sim.faults = keep
    del sim.cleared[:-200]
    for ftype in FAULT_TYPES:
        SANDBOX_FAULTS_ACTIVE.labels(type=ftype).set(sum(1 for f in keep if f.type == ftype))
    for plural, table in sim.store.objects.items():
        SANDBOX_OBJECTS.labels(resource=plural).set(len(table))


def _cleared_by(sim: Simulation, fault: Fault) -> str:
    if fault.type == "not_ready_node":
        return "" if sim.store.get("nodes", "", fault.target) else "node deleted"
    ns, name = _split(fault.target)
    if fault.type == "hpa_maxed":
        hpa = sim.store.get("horizontalpodautoscalers", ns, name)
        if hpa is None:
            return "hpa deleted"
        return "maxReplicas raised above the demand" if hpa["spec"]["maxReplicas"] > fault.opts["demand"] else ""
    if fault.type == "failed_job":
        return "" if sim.store.get("jobs", ns, name) else "job deleted"
    if fault.type in ("evicted",) or (fault.type == "crash_loop" and fault.opts.get("transient")):
        alive = {p["metadata"]["uid"] for p in sim.store.all("pods", ns)}
        return "" if fault.pod_uids & alive else ("pods restarted" if fault.type == "crash_loop" else "evicted pods deleted")
    deploy = sim.workload(ns, name)
    if deploy is None:
        return "workload deleted"
    if fault.type == "oom_killed":
        container = next((c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == fault.opts["container"]), None)
        limit = o.parse_bytes(((container or {}).get("resources") or {}).get("limits", {}).get("memory"))
        return "memory limit raised above the need" if limit > o.parse_bytes(fault.opts["need"]) else ""
    if current_config(sim, deploy) not in fault.bad_configs:
        return "rolled back to a good revision" if fault.type == "replication_failure" else "template changed"
    return ""
