"""The workload controllers: Deployments own ReplicaSets own Pods; DaemonSets and Jobs; their statuses.

Mixed into `Simulation` (which owns the store, the faults and the event recorder), beside the
scheduler and kubelet of `kubelet.py`. Statuses are the shapes real controllers write (v1.32).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from k8s.sandbox import objects as o
from k8s.sandbox.kubelet import BulkPlacer, is_active, is_pod_ready, set_condition
from k8s.sandbox.store import Obj, Store, copy, now_iso, with_status

if TYPE_CHECKING:
    from k8s.sandbox.faults import Fault


def pod_qos(spec: Obj) -> str:
    resources = [c.get("resources") or {} for c in spec["containers"]]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    if all(r.get("limits") and r.get("requests") == r.get("limits") for r in resources):
        return "Guaranteed"
    return "Burstable"


def _ordinal(pod_name: str) -> int:
    tail = pod_name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 1 << 30


class Workloads:
    """Deployment, ReplicaSet, DaemonSet and Job controllers, as a mixin of `Simulation`."""

    store: Store
    faults: list[Fault]
    bulk: bool
    _pod_keys: dict[str, tuple[Any, ...]]
    _config_cache: dict[str, str]
    _template_hashes: dict[str, str]
    _running_prototypes: dict[str, bytes]
    _node_ip: Callable[[str], str]
    _pod_ip: Callable[[Obj], str]

    event: Callable[..., None]  # Simulation.event: records a core/v1 Event
    suffix: Callable[..., str]

    # --- deployments -----------------------------------------------------------------------
    def _deployments(self) -> None:
        for d in self.store.all("deployments"):
            ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
            uid = d["metadata"]["uid"]
            owned = self.store.owned_by("replicasets", uid, ns)
            template = d["spec"]["template"]
            h = self.template_hash(d)
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
                    # A first ReplicaSet starts at the full count, as the controller scales it at once.
                    "spec": {"replicas": 0 if owned or d["spec"].get("paused") else replicas, "selector": selector,
                             "template": rs_template},
                    "status": {"replicas": 0},
                })
                if not owned and not d["spec"].get("paused") and replicas:
                    self.event(d, "Normal", "ScalingReplicaSet", f"Scaled up replica set {rs_name} from 0 to {replicas}",
                               "deployment-controller")
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
                self.store.put("deployments", {**d, "metadata": {**d["metadata"], "annotations": {**ann, o.REVISION: str(revision)}}})
            self._prune_history(d, uid, ns)

    def template_hash(self, workload: Obj) -> str:
        """pod-template-hash of a Deployment's template, cached per (uid, generation): a spec change
        bumps the generation, and 30,000 deployments are not re-hashed on every reconcile."""
        meta = workload["metadata"]
        key = f"{meta['uid']}/{meta.get('generation', 1)}"
        h = self._template_hashes.get(key)
        if h is None:
            h = self._template_hashes[key] = o.template_hash(workload["spec"]["template"])
        return h

    def _prune_history(self, d: Obj, uid: str, ns: str) -> None:
        limit = d["spec"].get("revisionHistoryLimit", 10)
        old = [rs for rs in self.store.owned_by("replicasets", uid, ns)
               if rs["spec"].get("replicas", 0) == 0 and rs["metadata"]["labels"].get("pod-template-hash") != self.template_hash(d)]
        old.sort(key=lambda rs: int(rs["metadata"]["annotations"].get(o.REVISION, "0")))
        for rs in old[: max(0, len(old) - limit)]:
            if not any(is_active(p) for p in self.store.owned_by("pods", rs["metadata"]["uid"], ns)):
                self.store.delete("replicasets", ns, rs["metadata"]["name"])

    # --- replicasets -----------------------------------------------------------------------
    def new_pod(self, owner: Obj, template: Obj, *, generate_name: str | None = None, node_name: str = "",
                running: bool = False, name: str = "", labels: dict[str, str] | None = None) -> Obj:
        ns = owner["metadata"]["namespace"]
        prefix = generate_name or f"{owner['metadata']['name']}-"
        if not name:
            name = prefix + self.suffix()
            while self.store.get("pods", ns, name) is not None:
                name = prefix + self.suffix()
        if running and not labels:
            stamped = self._stamp_running_pod(owner, name, node_name)
            if stamped is not None:
                return self.store.create("pods", stamped)
        spec = copy(template["spec"])
        if node_name:
            spec["nodeName"] = node_name
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "generateName": prefix, "namespace": ns,
                         "labels": {**(template["metadata"].get("labels") or {}), **(labels or {})},
                         "annotations": dict(template["metadata"].get("annotations") or {}),
                         "ownerReferences": [o.owner_ref(owner)]},
            "spec": spec,
            "status": {"phase": "Pending", "qosClass": pod_qos(spec)},
        }
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        if running:
            # The scale generator's steady state: placed and running from the start, one write.
            pod["metadata"]["uid"] = str(uuid.uuid4())
            pod["status"] = self._pod_status(pod, "running", None, True, advance=False)["status"]
            self._pod_keys[pod["metadata"]["uid"]] = ("running", True)
            self._running_prototypes[owner["metadata"]["uid"]] = orjson.dumps(pod)
        return self.store.create("pods", pod)

    def _stamp_running_pod(self, owner: Obj, name: str, node_name: str) -> Obj | None:
        """A placed, running pod of `owner` made from its first one (the scale generator's path):
        only what differs between two such pods is computed (name, uid, node, IPs, container ids);
        the kubelet's status for the rest is the same, and computing it per pod dominated seeding."""
        prototype = self._running_prototypes.get(owner["metadata"]["uid"])
        if prototype is None:
            return None
        pod = orjson.loads(prototype)
        uid = str(uuid.uuid4())
        meta, status = pod["metadata"], pod["status"]
        meta["name"], meta["uid"] = name, uid
        meta.pop("resourceVersion", None)
        meta.pop("creationTimestamp", None)
        pod["spec"]["nodeName"] = node_name
        host_ip = self._node_ip(node_name)
        status["podIP"] = None
        pod_ip = self._pod_ip(pod)
        status.update({"hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": pod_ip, "podIPs": [{"ip": pod_ip}]})
        for cs in status.get("containerStatuses") or ():
            cs["containerID"] = o.container_id(uid, cs["name"], str(cs.get("restartCount", 0)))
        self._pod_keys[uid] = ("running", True)
        return pod

    def _replicasets(self) -> None:
        pods_by_owner: dict[str, list[Obj]] = {}
        for pod in self.store.all("pods"):
            ref = o.controller_of(pod)
            if ref and is_active(pod):
                pods_by_owner.setdefault(ref["uid"], []).append(pod)
        placer = BulkPlacer(self._usage(), self._candidates()) if self.bulk and not self.faults else None
        for rs in self.store.all("replicasets"):
            want = rs["spec"].get("replicas", 1)
            pods = pods_by_owner.get(rs["metadata"]["uid"], [])
            for _ in range(want - len(pods)):
                node = placer.place(*self._requests(rs["spec"]["template"]["spec"])) if placer is not None else None
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

    def _statefulsets(self) -> None:
        """Pods named <name>-<ordinal>, replaced under the same name; scale-down removes the highest
        ordinals first; a template change replaces the pods of the old revision. (Pods are created
        together, as under podManagementPolicy Parallel, not one at a time once the previous is Ready.)"""
        for sts in self.store.all("statefulsets"):
            ns, name, uid = sts["metadata"]["namespace"], sts["metadata"]["name"], sts["metadata"]["uid"]
            template = sts["spec"]["template"]
            revision = f"{name}-{o.template_hash(template)}"
            self._config_cache[revision] = o.config_hash(template)
            want = sts["spec"].get("replicas", 1)
            pods = {p["metadata"]["name"]: p for p in self.store.owned_by("pods", uid, ns)}
            for pod_name in sorted(pods, key=lambda n: -_ordinal(n)):
                pod = pods[pod_name]
                stale = pod["metadata"].get("labels", {}).get("controller-revision-hash") != revision
                if _ordinal(pod_name) >= want or stale or not is_active(pod):
                    self.delete_pod(pod)
                    del pods[pod_name]
                    self.event(sts, "Normal", "SuccessfulDelete", f"delete Pod {pod_name} in StatefulSet {name} successful",
                               "statefulset-controller")
            for i in range(want):
                pod_name = f"{name}-{i}"
                if pod_name in pods:
                    continue
                pod_template = copy(template)
                pod_template["spec"]["hostname"] = pod_name
                if sts["spec"].get("serviceName"):
                    pod_template["spec"]["subdomain"] = sts["spec"]["serviceName"]
                self.new_pod(sts, pod_template, name=pod_name, labels={
                    "controller-revision-hash": revision, "statefulset.kubernetes.io/pod-name": pod_name,
                    "apps.kubernetes.io/pod-index": str(i)})
                self.event(sts, "Normal", "SuccessfulCreate", f"create Pod {pod_name} in StatefulSet {name} successful",
                           "statefulset-controller")

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
                self.store.put("replicasets", with_status(rs, status))

    def _deployment_status(self) -> None:
        from k8s.sandbox.faults import deployment_faults

        for d in self.store.all("deployments"):
            ns, uid = d["metadata"]["namespace"], d["metadata"]["uid"]
            h = self.template_hash(d)
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
                self.store.put("deployments", with_status(d, status))

    def _statefulset_status(self) -> None:
        for sts in self.store.all("statefulsets"):
            pods = self._pods_of(sts)
            ready = sum(1 for p in pods if is_pod_ready(p))
            revision = f"{sts['metadata']['name']}-{o.template_hash(sts['spec']['template'])}"
            current = sum(1 for p in pods if p["metadata"].get("labels", {}).get("controller-revision-hash") == revision)
            status: Obj = {"observedGeneration": sts["metadata"].get("generation", 1), "replicas": len(pods),
                           "readyReplicas": ready, "currentReplicas": current, "updatedReplicas": current,
                           "availableReplicas": ready, "currentRevision": revision, "updateRevision": revision,
                           "collisionCount": 0}
            for key in ("readyReplicas", "currentReplicas", "updatedReplicas"):
                if not status[key]:
                    del status[key]
            if status != sts.get("status"):
                self.store.put("statefulsets", with_status(sts, status))

    def _daemonset_status(self) -> None:
        n_nodes = len(self.store.all("nodes"))
        for ds in self.store.all("daemonsets"):
            pods = self._pods_of(ds)
            ready = sum(1 for p in pods if is_pod_ready(p))
            status = {"currentNumberScheduled": len(pods), "desiredNumberScheduled": n_nodes, "numberMisscheduled": 0,
                      "numberReady": ready, "numberAvailable": ready, "numberUnavailable": max(n_nodes - ready, 0),
                      "updatedNumberScheduled": len(pods), "observedGeneration": ds["metadata"].get("generation", 1)}
            if status != ds.get("status"):
                self.store.put("daemonsets", with_status(ds, status))
