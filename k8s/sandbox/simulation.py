"""The controllers of a small cluster, run synchronously after every write and on each tick.

Deployments own ReplicaSets own Pods (a deleted pod is replaced under a new name); a
scheduler places pods on Ready, schedulable nodes with room; a kubelet writes each pod's
status from the faults that touch it; HPAs, Jobs, DaemonSets, PDBs, Endpoints and node
conditions follow. Statuses are the shapes real controllers write (API reference v1.32).
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, Any

import structlog

from k8s.sandbox import objects as o
from k8s.sandbox.kubelet import NodeAgents, is_active, is_pod_ready, set_condition
from k8s.sandbox.store import Obj, Store, copy, now_iso, selector_matches
from k8s.sandbox.workloads import Workloads

if TYPE_CHECKING:
    from k8s.sandbox.faults import Fault

log = structlog.get_logger(__name__)

MAX_EVENTS = 5000



class Simulation(Workloads, NodeAgents):
    def __init__(self, seed: int = 7) -> None:
        self.store = Store()
        self.lock: threading.RLock = self.store.lock
        self.rng = random.Random(seed)
        self.faults: list[Fault] = []
        self.hpa_demand: dict[tuple[str, str], int] = {}
        self._pod_keys: dict[str, tuple[Any, ...]] = {}
        self._config_cache: dict[str, str] = {}
        self._template_hashes: dict[str, str] = {}
        # owner uid -> its first placed-and-running pod (JSON), which the scale generator stamps copies of.
        self._running_prototypes: dict[str, bytes] = {}
        self._ip_next: dict[str, int] = {}
        self._event_index: dict[tuple[str, str, str], str] = {}
        self.ticks = 0
        # Set while a scale generator seeds thousands of objects: no per-pod Normal events.
        self.bulk = False
        # Set by a sandbox that ticks on a clock (`sandbox serve`): crash loops then restart on
        # the kubelet's back-off (10 s doubling to 5 min); a test's `tick()` restarts at once.
        self.realtime = False
        # (fault, what cleared it), newest last: what the admin endpoint reports as history.
        self.cleared: list[tuple[Fault, str]] = []

    # --- helpers ---------------------------------------------------------------------------
    def suffix(self, n: int = 5) -> str:
        return "".join(self.rng.choice(o.SAFE_ALPHABET) for _ in range(n))

    def rs_config(self, rs: Obj) -> str:
        uid = rs["metadata"]["uid"]
        if uid not in self._config_cache:
            self._config_cache[uid] = o.config_hash(rs["spec"]["template"])
        return self._config_cache[uid]

    def pod_owner_chain(self, pod: Obj) -> tuple[Obj | None, Obj | None]:
        """(replicaset, deployment) that own a pod, or Nones."""
        ref = o.controller_of(pod)
        if not ref or ref["kind"] != "ReplicaSet":
            return None, None
        ns = pod["metadata"]["namespace"]
        rs = self.store.get("replicasets", ns, ref["name"])
        if rs is None:
            return None, None
        dref = o.controller_of(rs)
        deploy = self.store.get("deployments", ns, dref["name"]) if dref and dref["kind"] == "Deployment" else None
        return rs, deploy

    def pod_workload(self, pod: Obj) -> tuple[str | None, Obj | None]:
        """(configuration hash of the template the pod was made from, Deployment or StatefulSet owning it)."""
        ref = o.controller_of(pod)
        if ref and ref["kind"] == "StatefulSet":
            sts = self.store.get("statefulsets", pod["metadata"]["namespace"], ref["name"])
            revision = pod["metadata"].get("labels", {}).get("controller-revision-hash", "")
            return self._config_cache.get(revision), sts
        rs, deploy = self.pod_owner_chain(pod)
        return (self.rs_config(rs) if rs is not None else None), deploy

    def workload(self, ns: str, name: str) -> Obj | None:
        """The Deployment, else the StatefulSet, of that name: what a workload fault targets."""
        return self.store.get("deployments", ns, name) or self.store.get("statefulsets", ns, name)

    def deployment_pods(self, deploy: Obj) -> list[Obj]:
        ns = deploy["metadata"]["namespace"]
        if deploy["kind"] == "StatefulSet":
            return self.store.owned_by("pods", deploy["metadata"]["uid"], ns)
        pods: list[Obj] = []
        for rs in self.store.owned_by("replicasets", deploy["metadata"]["uid"], ns):
            pods.extend(self.store.owned_by("pods", rs["metadata"]["uid"], ns))
        return pods

    def event(self, involved: Obj, etype: str, reason: str, message: str, component: str, *,
              host: str = "", field_path: str = "") -> None:
        if self.bulk and etype == "Normal":
            return
        meta = involved["metadata"]
        ns = meta.get("namespace") or "default"
        key = (meta["uid"], reason, message)
        now = now_iso()
        existing_name = self._event_index.get(key)
        existing = self.store.get("events", ns, existing_name) if existing_name else None
        if existing is not None:
            updated = copy(existing)
            updated["count"] = existing.get("count", 1) + 1
            updated["lastTimestamp"] = now
            self.store.put("events", updated)
            return
        name = f"{meta['name']}.{self.rng.getrandbits(64):016x}"
        involved_ref: Obj = {"kind": involved["kind"], "name": meta["name"], "uid": meta["uid"],
                             "apiVersion": involved["apiVersion"], "resourceVersion": meta.get("resourceVersion", "")}
        if meta.get("namespace"):
            involved_ref["namespace"] = meta["namespace"]
        if field_path:
            involved_ref["fieldPath"] = field_path
        source: Obj = {"component": component}
        if host:
            source["host"] = host
        self.store.create("events", {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": involved_ref, "reason": reason, "message": message, "source": source,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": etype, "eventTime": None,
            "reportingComponent": component, "reportingInstance": host,
        })
        self._event_index[key] = name
        if len(self._event_index) > MAX_EVENTS:
            # Real clusters expire events after an hour; we keep the newest few thousand.
            for old_key in list(self._event_index)[: MAX_EVENTS // 5]:
                old_name = self._event_index.pop(old_key)
                for (ens, ename) in list(self.store.objects["events"]):
                    if ename == old_name:
                        self.store.delete("events", ens, ename)

    def faults_of(self, ftype: str) -> list[Fault]:
        return [f for f in self.faults if f.type == ftype]

    # --- the reconcile loop ----------------------------------------------------------------
    def reconcile(self, *, tick: bool = False) -> None:
        from k8s.sandbox import faults as fault_rules

        with self.lock:
            # Remediations done by the write that triggered this pass count before statuses are written.
            fault_rules.resolve(self)
            self._nodes()
            self._node_leases(tick=tick)
            self._hpas()
            self._deployments()
            self._replicasets()
            self._statefulsets()
            self._daemonsets()
            self._jobs()
            self._schedule()
            self._kubelet(tick=tick)
            self._replicaset_status()
            self._deployment_status()
            self._statefulset_status()
            self._daemonset_status()
            self._pdb_status()
            self._endpoints()
            self._hpas()  # again, to report the replicas the scale-up produced (currentReplicas)
            fault_rules.resolve(self)

    def tick(self) -> None:
        with self.lock:
            self.ticks += 1
            self.reconcile(tick=True)

    # --- nodes -----------------------------------------------------------------------------
    def node_fault(self, name: str) -> Fault | None:
        return next((f for f in self.faults if f.type == "not_ready_node" and f.target == name), None)

    def _nodes(self) -> None:
        for node in self.store.all("nodes"):
            name = node["metadata"]["name"]
            fault = self.node_fault(name)
            conds = node["status"].get("conditions") or []
            if fault is None:
                wanted = [("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                          ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                          ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                          ("Ready", "True", "KubeletReady", "kubelet is posting ready status")]
                taints = []
            elif fault.opts.get("status", "Unknown") == "Unknown":
                wanted = [(t, "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
                          for t in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")]
                taints = ["node.kubernetes.io/unreachable"]
            else:
                wanted = [("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                          ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                          ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                          ("Ready", "False", "KubeletNotReady",
                           "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
                           "message:Network plugin returns error: cni plugin not initialized")]
                taints = ["node.kubernetes.io/not-ready"]
            new_conds = conds
            for ctype, status, reason, message in wanted:
                new_conds = set_condition(new_conds, ctype, status, reason, message)
                for c in new_conds:
                    if c["type"] == ctype:
                        c.setdefault("lastHeartbeatTime", c["lastTransitionTime"])
                        if fault is None and self.ticks:
                            c["lastHeartbeatTime"] = c["lastHeartbeatTime"]
            managed = {"node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready", "node.kubernetes.io/unschedulable"}
            old_taints = node["spec"].get("taints") or []
            new_taints = [t for t in old_taints if t["key"] not in managed]
            for key in taints:
                new_taints.append({"key": key, "effect": "NoSchedule", "timeAdded": self._taint_time(old_taints, key, "NoSchedule")})
                new_taints.append({"key": key, "effect": "NoExecute", "timeAdded": self._taint_time(old_taints, key, "NoExecute")})
            if node["spec"].get("unschedulable"):
                new_taints.append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule",
                                   "timeAdded": self._taint_time(old_taints, "node.kubernetes.io/unschedulable", "NoSchedule")})
            if new_conds != conds or new_taints != old_taints:
                updated = copy(node)
                updated["status"]["conditions"] = new_conds
                if new_taints:
                    updated["spec"]["taints"] = new_taints
                else:
                    updated["spec"].pop("taints", None)
                was_ready = self.node_ready(node) if conds else True
                self.store.put("nodes", updated)
                if was_ready and not self.node_ready(updated):
                    self.event(updated, "Normal", "NodeNotReady", f"Node {name} status is now: NodeNotReady", "node-controller")
                elif conds and not was_ready and self.node_ready(updated):
                    self.event(updated, "Normal", "NodeReady", f"Node {name} status is now: NodeReady", "kubelet", host=name)

    @staticmethod
    def _taint_time(old: list[Obj], key: str, effect: str) -> str:
        for t in old:
            if t["key"] == key and t["effect"] == effect and t.get("timeAdded"):
                return t["timeAdded"]
        return now_iso()

    # --- HPAs ------------------------------------------------------------------------------
    def _hpas(self) -> None:
        for h in self.store.all("horizontalpodautoscalers"):
            ns, name = h["metadata"]["namespace"], h["metadata"]["name"]
            spec = h["spec"]
            ref = spec.get("scaleTargetRef") or {}
            target = self.store.get("deployments", ns, ref.get("name", "")) if ref.get("kind") == "Deployment" else None
            status = copy(h.get("status") or {})
            conds = status.get("conditions") or []
            if target is None:
                conds = set_condition(conds, "AbleToScale", "False", "FailedGetScale",
                                      f'the HPA controller was unable to get the target\'s current scale: deployments/scale.apps "{ref.get("name")}" not found')
                status.update({"conditions": conds, "currentReplicas": 0, "desiredReplicas": 0})
            else:
                min_r, max_r = spec.get("minReplicas", 1), spec["maxReplicas"]
                current = target["spec"].get("replicas", 1)
                demand = self.hpa_demand.get((ns, name))
                wanted = demand if demand is not None else current
                desired = max(min_r, min(max_r, wanted))
                target_util = self._hpa_target(spec)
                util = round(target_util * wanted / max(desired, 1)) if demand is not None else max(target_util - 18, 5)
                if current != desired:
                    scaled = copy(target)
                    scaled["spec"]["replicas"] = desired
                    self.store.put("deployments", scaled)
                    status["lastScaleTime"] = now_iso()
                    why = "above" if desired > current else "below"
                    self.event(h, "Normal", "SuccessfulRescale",
                               f"New size: {desired}; reason: cpu resource utilization (percentage of request) {why} target",
                               "horizontal-pod-autoscaler")
                conds = set_condition(conds, "AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
                conds = set_condition(conds, "ScalingActive", "True", "ValidMetricFound",
                                      "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)")
                if wanted > max_r:
                    conds = set_condition(conds, "ScalingLimited", "True", "TooManyReplicas", "the desired replica count is more than the maximum replica count")
                elif wanted < min_r:
                    conds = set_condition(conds, "ScalingLimited", "True", "TooFewReplicas", "the desired replica count is less than the minimum replica count")
                else:
                    conds = set_condition(conds, "ScalingLimited", "False", "DesiredWithinRange", "the desired count is within the acceptable range")
                status.update({
                    "observedGeneration": h["metadata"].get("generation", 1),
                    "currentReplicas": target.get("status", {}).get("replicas", current),
                    "desiredReplicas": desired,
                    "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {
                        "averageUtilization": util, "averageValue": f"{util}m"}}}],
                    "conditions": conds,
                })
            if status != h.get("status"):
                updated = copy(h)
                updated["status"] = status
                self.store.put("horizontalpodautoscalers", updated)

    @staticmethod
    def _hpa_target(spec: Obj) -> int:
        for metric in spec.get("metrics") or ():
            target = (metric.get("resource") or {}).get("target") or {}
            if target.get("averageUtilization"):
                return int(target["averageUtilization"])
        return 80



    def pdb_numbers(self, pdb: Obj) -> tuple[int, int, int]:
        """(expectedPods, currentHealthy, desiredHealthy) as the disruption controller counts them."""
        ns = pdb["metadata"]["namespace"]
        pods = [p for p in self.store.all("pods", ns) if is_active(p)
                and selector_matches(pdb["spec"].get("selector"), p["metadata"].get("labels") or {})]
        expected = len(pods)
        healthy = sum(1 for p in pods if is_pod_ready(p))
        spec = pdb["spec"]
        if "minAvailable" in spec:
            desired = self._int_or_percent(spec["minAvailable"], expected, round_up=True)
        else:
            desired = max(0, expected - self._int_or_percent(spec.get("maxUnavailable", 0), expected, round_up=True))
        return expected, healthy, desired

    @staticmethod
    def _int_or_percent(value: int | str, total: int, *, round_up: bool) -> int:
        if isinstance(value, str) and value.endswith("%"):
            share = total * int(value[:-1]) / 100
            return int(-(-share // 1)) if round_up else int(share)
        return int(value)

    def _pdb_status(self) -> None:
        for pdb in self.store.all("poddisruptionbudgets"):
            expected, healthy, desired = self.pdb_numbers(pdb)
            allowed = max(0, healthy - desired)
            conds = (pdb.get("status") or {}).get("conditions") or []
            if allowed > 0:
                conds = set_condition(conds, "DisruptionAllowed", "True", "SufficientPods", None)
            else:
                conds = set_condition(conds, "DisruptionAllowed", "False", "InsufficientPods", None)
            for c in conds:
                c["observedGeneration"] = pdb["metadata"].get("generation", 1)
                c.setdefault("message", "")
            status = {"observedGeneration": pdb["metadata"].get("generation", 1), "disruptionsAllowed": allowed,
                      "currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected, "conditions": conds}
            if status != pdb.get("status"):
                updated = copy(pdb)
                updated["status"] = status
                self.store.put("poddisruptionbudgets", updated)

    def _endpoints(self) -> None:
        for svc in self.store.all("services"):
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            selector = svc["spec"].get("selector")
            if not selector:
                continue
            ready, not_ready = [], []
            for p in self.store.all("pods", ns):
                labels = p["metadata"].get("labels") or {}
                if not is_active(p) or not p["status"].get("podIP") or any(labels.get(k) != v for k, v in selector.items()):
                    continue
                address = {"ip": p["status"]["podIP"], "nodeName": p["spec"]["nodeName"],
                           "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}}
                (ready if is_pod_ready(p) else not_ready).append(address)
            subset: Obj = {}
            if ready:
                subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
            if not_ready:
                subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
            ports = [{"name": p.get("name", ""), "port": p.get("targetPort", p["port"]), "protocol": p.get("protocol", "TCP")}
                     for p in svc["spec"].get("ports") or ()]
            subsets = [{**subset, "ports": ports}] if subset else []
            existing = self.store.get("endpoints", ns, name)
            if existing is None:
                self.store.create("endpoints", {"apiVersion": "v1", "kind": "Endpoints",
                                                "metadata": {"name": name, "namespace": ns, "labels": dict(svc["metadata"].get("labels") or {})},
                                                "subsets": subsets})
            elif existing.get("subsets") != subsets:
                updated = copy(existing)
                updated["subsets"] = subsets
                self.store.put("endpoints", updated)

