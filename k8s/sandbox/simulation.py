"""The controllers of a small cluster, run synchronously after every write and on each tick.

Deployments own ReplicaSets own Pods (a deleted pod is replaced under a new name); a
scheduler places pods on Ready, schedulable nodes with room; a kubelet writes each pod's
status from the faults that touch it; HPAs, Jobs, DaemonSets, PDBs, Endpoints and node
conditions follow. Statuses are the shapes real controllers write (API reference v1.32).
"""

from __future__ import annotations

import random
import threading
import uuid
from typing import TYPE_CHECKING, Any

import structlog

from k8s.sandbox import objects as o
from k8s.sandbox.kubelet import NodeAgents, is_active, is_pod_ready, set_condition
from k8s.sandbox.store import Obj, Store, copy, now_iso, selector_matches

if TYPE_CHECKING:
    from k8s.sandbox.faults import Fault

log = structlog.get_logger(__name__)

MAX_EVENTS = 5000



class Simulation(NodeAgents):
    def __init__(self, seed: int = 7) -> None:
        self.store = Store()
        self.lock: threading.RLock = self.store.lock
        self.rng = random.Random(seed)
        self.faults: list[Fault] = []
        self.hpa_demand: dict[tuple[str, str], int] = {}
        self._pod_keys: dict[str, tuple[Any, ...]] = {}
        self._config_cache: dict[str, str] = {}
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

    def deployment_pods(self, deploy: Obj) -> list[Obj]:
        ns = deploy["metadata"]["namespace"]
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
            self._daemonsets()
            self._jobs()
            self._schedule()
            self._kubelet(tick=tick)
            self._replicaset_status()
            self._deployment_status()
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

    # --- deployments -----------------------------------------------------------------------
    def _deployments(self) -> None:
        for d in self.store.all("deployments"):
            ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
            uid = d["metadata"]["uid"]
            owned = self.store.owned_by("replicasets", uid, ns)
            template = d["spec"]["template"]
            h = o.template_hash(template)
            revisions = [int((rs["metadata"].get("annotations") or {}).get(o.REVISION, "0")) for rs in owned]
            max_rev = max(revisions, default=0)
            current = next((rs for rs in owned if rs["metadata"]["labels"].get("pod-template-hash") == h), None)
            replicas = d["spec"].get("replicas", 1)
            change_cause = (d["metadata"].get("annotations") or {}).get(o.CHANGE_CAUSE)
            if current is None:
                rs_name = f"{name}-{h}"
                labels = {**(template["metadata"].get("labels") or {}), "pod-template-hash": h}
                rs_template = copy(template)
                rs_template["metadata"]["labels"] = dict(labels)
                annotations = {o.REVISION: str(max_rev + 1), "deployment.kubernetes.io/desired-replicas": str(replicas),
                               "deployment.kubernetes.io/max-replicas": str(replicas + max(1, replicas // 4))}
                if change_cause:
                    annotations[o.CHANGE_CAUSE] = change_cause
                selector = copy(d["spec"]["selector"])
                selector.setdefault("matchLabels", {})["pod-template-hash"] = h
                current = self.store.create("replicasets", {
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": rs_name, "namespace": ns, "labels": labels, "annotations": annotations,
                                 "ownerReferences": [o.owner_ref(d)]},
                    "spec": {"replicas": 0, "selector": selector, "template": rs_template},
                    "status": {"replicas": 0},
                })
                revision = max_rev + 1
            else:
                revision = int((current["metadata"].get("annotations") or {}).get(o.REVISION, "0"))
                if revision < max_rev:
                    # A rollback (or a template change back to an old one): the old ReplicaSet
                    # becomes the newest revision, as the deployment controller does.
                    updated = copy(current)
                    ann = updated["metadata"].setdefault("annotations", {})
                    history = [x for x in ann.get("deployment.kubernetes.io/revision-history", "").split(",") if x]
                    ann["deployment.kubernetes.io/revision-history"] = ",".join([*history, str(revision)])
                    ann[o.REVISION] = str(max_rev + 1)
                    if change_cause:
                        ann[o.CHANGE_CAUSE] = change_cause
                    current = self.store.put("replicasets", updated)
                    revision = max_rev + 1
            paused = d["spec"].get("paused", False)
            for rs in self.store.owned_by("replicasets", uid, ns):
                want = replicas if rs["metadata"]["uid"] == current["metadata"]["uid"] else 0
                have = rs["spec"].get("replicas", 0)
                if have != want and not paused:
                    updated = copy(rs)
                    updated["spec"]["replicas"] = want
                    updated["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] = str(replicas)
                    self.store.put("replicasets", updated)
                    verb = "up" if want > have else "down"
                    self.event(d, "Normal", "ScalingReplicaSet",
                               f"Scaled {verb} replica set {rs['metadata']['name']} from {have} to {want}", "deployment-controller")
            ann = d["metadata"].get("annotations") or {}
            if ann.get(o.REVISION) != str(revision):
                updated = copy(d)
                updated["metadata"].setdefault("annotations", {})[o.REVISION] = str(revision)
                self.store.put("deployments", updated)
            self._prune_history(d, uid, ns)

    def _prune_history(self, d: Obj, uid: str, ns: str) -> None:
        limit = d["spec"].get("revisionHistoryLimit", 10)
        old = [rs for rs in self.store.owned_by("replicasets", uid, ns)
               if rs["spec"].get("replicas", 0) == 0 and rs["metadata"]["labels"].get("pod-template-hash") != o.template_hash(d["spec"]["template"])]
        old.sort(key=lambda rs: int(rs["metadata"]["annotations"].get(o.REVISION, "0")))
        for rs in old[: max(0, len(old) - limit)]:
            if not any(is_active(p) for p in self.store.owned_by("pods", rs["metadata"]["uid"], ns)):
                self.store.delete("replicasets", ns, rs["metadata"]["name"])

    # --- replicasets -----------------------------------------------------------------------
    def new_pod(self, owner: Obj, template: Obj, *, generate_name: str | None = None, node_name: str = "",
                running: bool = False) -> Obj:
        ns = owner["metadata"]["namespace"]
        prefix = generate_name or f"{owner['metadata']['name']}-"
        name = prefix + self.suffix()
        while self.store.get("pods", ns, name) is not None:
            name = prefix + self.suffix()
        spec = copy(template["spec"])
        if node_name:
            spec["nodeName"] = node_name
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "generateName": prefix, "namespace": ns,
                         "labels": dict(template["metadata"].get("labels") or {}),
                         "annotations": dict(template["metadata"].get("annotations") or {}),
                         "ownerReferences": [o.owner_ref(owner)]},
            "spec": spec,
            "status": {"phase": "Pending", "qosClass": self._qos(spec)},
        }
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        if running:
            # The scale generator's steady state: placed and running from the start, one write.
            pod["metadata"]["uid"] = str(uuid.uuid4())
            pod["status"] = self._pod_status(pod, "running", None, True, advance=False)["status"]
            self._pod_keys[pod["metadata"]["uid"]] = ("running", True)
        return self.store.create("pods", pod)

    @staticmethod
    def _qos(spec: Obj) -> str:
        resources = [c.get("resources") or {} for c in spec["containers"]]
        if not any(r.get("requests") or r.get("limits") for r in resources):
            return "BestEffort"
        if all(r.get("limits") and r.get("requests") == r.get("limits") for r in resources):
            return "Guaranteed"
        return "Burstable"

    def _replicasets(self) -> None:
        pods_by_owner: dict[str, list[Obj]] = {}
        for pod in self.store.all("pods"):
            ref = o.controller_of(pod)
            if ref and is_active(pod):
                pods_by_owner.setdefault(ref["uid"], []).append(pod)
        usage, candidates = (self._usage(), self._candidates()) if self.bulk else ({}, [])
        for rs in self.store.all("replicasets"):
            want = rs["spec"].get("replicas", 1)
            pods = pods_by_owner.get(rs["metadata"]["uid"], [])
            for _ in range(want - len(pods)):
                node = self._pick_node(rs["spec"]["template"], usage, candidates) if self.bulk and not self.faults else None
                if node:
                    cpu, mem = self._requests(rs["spec"]["template"]["spec"])
                    usage[node][0] += 1
                    usage[node][1] += cpu
                    usage[node][2] += mem
                pod = self.new_pod(rs, rs["spec"]["template"], node_name=node or "", running=bool(node))
                self.event(rs, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}", "replicaset-controller")
            if len(pods) > want:
                # Like the ReplicaSet controller: unscheduled first, then not ready, then the most
                # restarted, then the newest (`pods` is in creation order: the later of two pods
                # created in the same second is the newer).
                newest_first = [p for _, p in sorted(enumerate(pods), key=lambda ip: (ip[1]["metadata"]["creationTimestamp"], ip[0]),
                                                     reverse=True)]
                victims = sorted(newest_first, key=lambda p: (bool(p["spec"].get("nodeName")), is_pod_ready(p),
                                                              -sum(c.get("restartCount", 0) for c in p["status"].get("containerStatuses") or ())))
                victims = victims[: len(pods) - want]
                for pod in victims:
                    self.delete_pod(pod)
                    self.event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}", "replicaset-controller")

    def delete_pod(self, pod: Obj) -> None:
        self.store.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
        self._pod_keys.pop(pod["metadata"]["uid"], None)

    def _daemonsets(self) -> None:
        nodes = self.store.all("nodes")
        for ds in self.store.all("daemonsets"):
            ns = ds["metadata"]["namespace"]
            pods = {p["spec"].get("nodeName"): p for p in self.store.owned_by("pods", ds["metadata"]["uid"], ns) if is_active(p)}
            for node in nodes:
                if node["metadata"]["name"] not in pods:
                    self.new_pod(ds, ds["spec"]["template"], node_name=node["metadata"]["name"])

    def _jobs(self) -> None:
        from k8s.sandbox.faults import job_fault

        for j in self.store.all("jobs"):
            uid = j["metadata"]["uid"]
            if not j["spec"].get("manualSelector") and (j["spec"].get("selector") or {}).get("matchLabels", {}).get(
                    "batch.kubernetes.io/controller-uid") != uid:
                # The job controller's generated selector names the job's uid, known only once created.
                j = copy(j)
                generated = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": j["metadata"]["name"],
                             "controller-uid": uid, "job-name": j["metadata"]["name"]}
                j["spec"]["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
                j["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {}).update(generated)
                j = self.store.put("jobs", j)
            status = j.get("status") or {}
            if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in status.get("conditions") or ()):
                continue
            fault = job_fault(self, j)
            node = self._pick_node({"spec": {"containers": []}}) or ""
            start = now_iso()
            runs = (j["spec"].get("backoffLimit", 6) + 1) if fault else 1
            for _ in range(runs):
                pod = self.new_pod(j, j["spec"]["template"], node_name=node)
                self._finish_job_pod(pod, failed=bool(fault))
                self.event(j, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}", "job-controller")
            updated = copy(j)
            conds: list[Obj] = []
            if fault:
                message = "Job has reached the specified backoff limit"
                conds = set_condition(conds, "FailureTarget", "True", "BackoffLimitExceeded", message, probe_time=True)
                conds = set_condition(conds, "Failed", "True", "BackoffLimitExceeded", message, probe_time=True)
                updated["status"] = {"startTime": start, "failed": runs, "ready": 0, "terminating": 0,
                                     "uncountedTerminatedPods": {}, "conditions": conds}
                self.event(j, "Warning", "BackoffLimitExceeded", message, "job-controller")
            else:
                conds = set_condition(conds, "SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods", probe_time=True)
                conds = set_condition(conds, "Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods", probe_time=True)
                updated["status"] = {"startTime": start, "completionTime": now_iso(), "succeeded": 1, "ready": 0,
                                     "terminating": 0, "uncountedTerminatedPods": {}, "conditions": conds}
                self.event(j, "Normal", "Completed", "Job completed", "job-controller")
            self.store.put("jobs", updated)

    # --- statuses --------------------------------------------------------------------------
    def _pods_of(self, owner: Obj) -> list[Obj]:
        return [p for p in self.store.owned_by("pods", owner["metadata"]["uid"], owner["metadata"]["namespace"]) if is_active(p)]

    def _replicaset_status(self) -> None:
        for rs in self.store.all("replicasets"):
            pods = self._pods_of(rs)
            ready = sum(1 for p in pods if is_pod_ready(p))
            status: Obj = {"replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
                           "availableReplicas": ready, "observedGeneration": rs["metadata"].get("generation", 1)}
            if not ready:
                status.pop("readyReplicas")
                status.pop("availableReplicas")
            if not pods:
                status.pop("fullyLabeledReplicas")
            if status != rs.get("status"):
                updated = copy(rs)
                updated["status"] = status
                self.store.put("replicasets", updated)

    def _deployment_status(self) -> None:
        from k8s.sandbox.faults import deployment_faults

        for d in self.store.all("deployments"):
            ns, uid = d["metadata"]["namespace"], d["metadata"]["uid"]
            h = o.template_hash(d["spec"]["template"])
            replicas = d["spec"].get("replicas", 1)
            total = updated_n = ready = 0
            new_rs_name = ""
            for rs in self.store.owned_by("replicasets", uid, ns):
                pods = self._pods_of(rs)
                total += len(pods)
                ready += sum(1 for p in pods if is_pod_ready(p))
                if rs["metadata"]["labels"].get("pod-template-hash") == h:
                    updated_n = len(pods)
                    new_rs_name = rs["metadata"]["name"]
            max_unavailable = replicas // 4
            conds = (d.get("status") or {}).get("conditions") or []
            if ready >= replicas - max_unavailable:
                conds = set_condition(conds, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", update_time=True)
            else:
                conds = set_condition(conds, "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.", update_time=True)
            stuck = any(f.type == "replication_failure" for f in deployment_faults(self, d))
            if stuck:
                conds = set_condition(conds, "Progressing", "False", "ProgressDeadlineExceeded",
                                      f'ReplicaSet "{new_rs_name}" has timed out progressing.', update_time=True)
            elif updated_n == replicas and ready == replicas and total == replicas:
                conds = set_condition(conds, "Progressing", "True", "NewReplicaSetAvailable",
                                      f'ReplicaSet "{new_rs_name}" has successfully progressed.', update_time=True)
            else:
                conds = set_condition(conds, "Progressing", "True", "ReplicaSetUpdated",
                                      f'ReplicaSet "{new_rs_name}" is progressing.', update_time=True)
            status: Obj = {"observedGeneration": d["metadata"].get("generation", 1), "replicas": total,
                           "updatedReplicas": updated_n, "readyReplicas": ready, "availableReplicas": ready,
                           "unavailableReplicas": max(replicas - ready, 0), "conditions": conds}
            for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas"):
                if not status[key]:
                    del status[key]
            if status != d.get("status"):
                updated = copy(d)
                updated["status"] = status
                self.store.put("deployments", updated)

    def _daemonset_status(self) -> None:
        n_nodes = len(self.store.all("nodes"))
        for ds in self.store.all("daemonsets"):
            pods = self._pods_of(ds)
            ready = sum(1 for p in pods if is_pod_ready(p))
            status = {"currentNumberScheduled": len(pods), "desiredNumberScheduled": n_nodes, "numberMisscheduled": 0,
                      "numberReady": ready, "numberAvailable": ready, "numberUnavailable": max(n_nodes - ready, 0),
                      "updatedNumberScheduled": len(pods), "observedGeneration": ds["metadata"].get("generation", 1)}
            if status != ds.get("status"):
                updated = copy(ds)
                updated["status"] = status
                self.store.put("daemonsets", updated)

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

