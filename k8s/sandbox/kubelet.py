"""The scheduler and the kubelet of the sandbox: where pods run and the status they report.

Mixed into `Simulation` (which owns the store, the faults and the event recorder); split out
so each half stays readable. Pod statuses follow what a v1.32 kubelet writes.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from k8s.sandbox import objects as o
from k8s.sandbox.store import Obj, Store, copy, now_iso

if TYPE_CHECKING:
    from k8s.sandbox.faults import Fault

ACTIVE_PHASES = ("Pending", "Running", "Unknown")
# The kubelet's crash back-off: 10 s doubling to 5 minutes.
BACKOFF_STEPS = (10, 20, 40, 80, 160, 300)
# States in which the container is killed and restarted, its restart count growing each tick.
RESTARTING_STATES = ("crash_loop", "oom_killed", "liveness_kill")


def probe_allowance(probe: Obj | None) -> int:
    """Seconds a kubelet gives a probe before its failures change anything:
    initialDelaySeconds + periodSeconds x failureThreshold (with the API's defaults)."""
    probe = probe or {}
    return int(probe.get("initialDelaySeconds") or 0) + int(probe.get("periodSeconds") or 10) * int(probe.get("failureThreshold") or 3)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(ts: str | None) -> datetime:
    if not ts:
        return datetime.now(UTC)
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def set_condition(conditions: list[Obj], ctype: str, status: str, reason: str | None, message: str | None,
                  *, probe_time: bool = False, update_time: bool = False) -> list[Obj]:
    """Set one condition, keeping lastTransitionTime while its status does not change."""
    now = now_iso()
    old = next((c for c in conditions if c["type"] == ctype), None)
    new: Obj = {"type": ctype, "status": status}
    if probe_time:
        new["lastProbeTime"] = None
    if update_time:
        new["lastUpdateTime"] = old["lastUpdateTime"] if old and old["status"] == status and old.get("reason") == reason else now
    new["lastTransitionTime"] = old["lastTransitionTime"] if old and old["status"] == status else now
    if reason:
        new["reason"] = reason
    if message:
        new["message"] = message
    out = [new if c["type"] == ctype else c for c in conditions]
    if old is None:
        out.append(new)
    return out


def is_pod_ready(pod: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or ())


def is_active(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase", "Pending") in ACTIVE_PHASES and not pod["metadata"].get("deletionTimestamp")


class BulkPlacer:
    """The scheduler's choice (the fewest pods, then the name) for the scale generator, from a heap
    instead of a scan of every node per pod: 100,000 pods on 10,000 nodes in O(pods log nodes)."""

    def __init__(self, usage: dict[str, list[int]], candidates: list[tuple[str, int, int, int]]) -> None:
        self.usage = usage
        self.capacity = {name: (pods, cpu, mem) for name, pods, cpu, mem in candidates}
        self.heap = [(usage[name][0], name) for name in self.capacity]
        heapq.heapify(self.heap)

    def place(self, cpu: int, mem: int) -> str | None:
        unfit: list[tuple[int, str]] = []
        chosen = None
        while self.heap:
            count, name = heapq.heappop(self.heap)
            used = self.usage[name]
            if count != used[0]:  # stale entry
                heapq.heappush(self.heap, (used[0], name))
                continue
            max_pods, max_cpu, max_mem = self.capacity[name]
            if used[0] >= max_pods:
                continue  # full for good: the generator only adds pods
            if used[1] + cpu <= max_cpu and used[2] + mem <= max_mem:
                used[0] += 1
                used[1] += cpu
                used[2] += mem
                heapq.heappush(self.heap, (used[0], name))
                chosen = name
                break
            unfit.append((count, name))  # no room for this pod; maybe for a smaller one
        for entry in unfit:
            heapq.heappush(self.heap, entry)
        return chosen


class NodeAgents:
    """Scheduler + kubelet, as a mixin of `Simulation`."""

    store: Store
    faults: list[Fault]
    ticks: int
    realtime: bool
    _pod_keys: dict[str, tuple[Any, ...]]
    _ip_next: dict[str, int]

    event: Callable[..., None]  # Simulation.event: records a core/v1 Event

    def _node_leases(self, *, tick: bool) -> None:
        """One Lease per node in kube-node-lease: a new node's is created; on a tick a Ready node's
        kubelet renews it once a quarter of its duration has passed; a NotReady node's goes stale."""
        now = time.time()
        nodes = self.store.all("nodes")
        if len(self.store.objects["leases"]) > len(nodes):
            names = {node["metadata"]["name"] for node in nodes}
            for lease in self.store.all("leases", o.NODE_LEASE_NAMESPACE):
                if lease["metadata"]["name"] not in names and any(r.get("kind") == "Node" for r in lease["metadata"].get("ownerReferences") or ()):
                    self.store.delete("leases", o.NODE_LEASE_NAMESPACE, lease["metadata"]["name"])  # its node is gone
        if self.store.get("namespaces", "", o.NODE_LEASE_NAMESPACE) is None:
            return
        faulted = {f.target for f in self.faults if f.type == "not_ready_node"}
        for node in nodes:
            name = node["metadata"]["name"]
            lease = self.store.get("leases", o.NODE_LEASE_NAMESPACE, name)
            if lease is not None and not tick and name not in faulted:
                continue  # a write's reconcile: only a tick renews, and this node's lease is not going stale
            renewed_at = _parse_micro_time(lease["spec"].get("renewTime")) if lease else now
            if name in faulted:
                # Not renewed since the kubelet stopped posting (the Ready condition's last transition).
                ready = next((c for c in node["status"].get("conditions") or () if c["type"] == "Ready"), None)
                stopped = _parse_micro_time((ready or {}).get("lastTransitionTime"))
                renewed_at = min(renewed_at, stopped) if stopped else renewed_at
            elif tick and now - renewed_at >= o.NODE_LEASE_SECONDS / 4:
                renewed_at = now
            if lease is None:
                self.store.create("leases", o.node_lease(node, _micro_time(renewed_at)))
            elif _micro_time(renewed_at) != lease["spec"].get("renewTime"):
                renewed = copy(lease)
                renewed["spec"]["renewTime"] = _micro_time(renewed_at)
                self.store.put("leases", renewed)

    def node_ready(self, node: Obj) -> bool:
        return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions") or ())

    def _finish_job_pod(self, pod: Obj, *, failed: bool) -> None:
        start = datetime.now(UTC) - timedelta(seconds=45)
        updated = copy(pod)
        cname = pod["spec"]["containers"][0]["name"]
        terminated = {"exitCode": 1 if failed else 0, "reason": "Error" if failed else "Completed",
                      "startedAt": _iso(start), "finishedAt": _iso(start + timedelta(seconds=41)),
                      "containerID": o.container_id(pod["metadata"]["uid"])}
        reason = "PodFailed" if failed else "PodCompleted"
        conds: list[Obj] = []
        for ctype, status, why in (("PodReadyToStartContainers", "False", None), ("Initialized", "True", reason),
                                   ("Ready", "False", reason), ("ContainersReady", "False", reason), ("PodScheduled", "True", None)):
            conds = set_condition(conds, ctype, status, why, None, probe_time=True)
        updated["status"] = {
            "phase": "Failed" if failed else "Succeeded", "conditions": conds,
            "hostIP": self._node_ip(pod["spec"].get("nodeName", "")), "podIP": self._pod_ip(pod),
            "startTime": _iso(start), "qosClass": pod["status"].get("qosClass", "Burstable"),
            "containerStatuses": [{"name": cname, "state": {"terminated": terminated}, "lastState": {}, "ready": False,
                                   "restartCount": 0, "image": pod["spec"]["containers"][0]["image"],
                                   "imageID": self._image_id(pod["spec"]["containers"][0]["image"]),
                                   "containerID": terminated["containerID"], "started": False}],
        }
        self.store.put("pods", updated)
        self._pod_keys[pod["metadata"]["uid"]] = ("terminal",)

    # --- scheduler -------------------------------------------------------------------------
    def _usage(self) -> dict[str, list[int]]:
        usage: dict[str, list[int]] = {n["metadata"]["name"]: [0, 0, 0] for n in self.store.all("nodes")}
        for pod in self.store.all("pods"):
            node = pod["spec"].get("nodeName")
            if node in usage and is_active(pod):
                cpu, mem = self._requests(pod["spec"])
                usage[node][0] += 1
                usage[node][1] += cpu
                usage[node][2] += mem
        return usage

    @staticmethod
    def _requests(spec: Obj) -> tuple[int, int]:
        cpu = mem = 0
        for c in spec.get("containers", ()):
            req = (c.get("resources") or {}).get("requests") or {}
            cpu += o.parse_cpu(req.get("cpu"))
            mem += o.parse_bytes(req.get("memory"))
        return cpu, mem

    def _candidates(self) -> list[tuple[str, int, int, int]]:
        """Nodes a pod may land on: Ready, schedulable, untainted; with their allocatable."""
        out = []
        for node in self.store.all("nodes"):
            if (self.node_ready(node) and not node["spec"].get("unschedulable")
                    and not any(t["effect"] == "NoSchedule" for t in node["spec"].get("taints") or ())):
                alloc = node["status"]["allocatable"]
                out.append((node["metadata"]["name"], int(alloc["pods"]), o.parse_cpu(alloc["cpu"]), o.parse_bytes(alloc["memory"])))
        return out

    def _pick_node(self, pod: Obj, usage: dict[str, list[int]] | None = None,
                   candidates: list[tuple[str, int, int, int]] | None = None,
                   siblings: dict[tuple[str, str], int] | None = None) -> str | None:
        """The feasible node with the fewest pods of the same owner, then the fewest pods
        (the default scheduler's spreading and least-allocated scores, simplified)."""
        usage = usage if usage is not None else self._usage()
        candidates = candidates if candidates is not None else self._candidates()
        ref = o.controller_of(pod) if "metadata" in pod else None
        owner = ref["uid"] if ref else ""
        cpu, mem = self._requests(pod["spec"])
        best: tuple[int, int, str] | None = None
        for name, max_pods, max_cpu, max_mem in candidates:
            used = usage[name]
            if used[0] < max_pods and used[1] + cpu <= max_cpu and used[2] + mem <= max_mem:
                score = ((siblings or {}).get((owner, name), 0), used[0], name)
                if best is None or score < best:
                    best = score
        return best[2] if best else None

    def _unschedulable_message(self, usage: dict[str, list[int]], pod: Obj, forced: bool) -> str:
        nodes = self.store.all("nodes")
        n = len(nodes)
        if forced:
            return (f"0/{n} nodes are available: {n} Insufficient memory. preemption: 0/{n} nodes are available: "
                    f"{n} No preemption victims found for incoming pod.")
        reasons: dict[str, int] = {}
        cpu, mem = self._requests(pod["spec"])
        for node in nodes:
            name = node["metadata"]["name"]
            taints = [t for t in node["spec"].get("taints") or () if t["effect"] == "NoSchedule"]
            if node["spec"].get("unschedulable"):
                why = "node(s) were unschedulable"
            elif taints:
                why = f"node(s) had untolerated taint {{{taints[0]['key']}: }}"
            elif usage[name][0] >= int(node["status"]["allocatable"]["pods"]):
                why = "Too many pods"
            elif usage[name][1] + cpu > o.parse_cpu(node["status"]["allocatable"]["cpu"]):
                why = "Insufficient cpu"
            else:
                why = "Insufficient memory"
            reasons[why] = reasons.get(why, 0) + 1
        text = ", ".join(f"{count} {why}" for why, count in sorted(reasons.items()))
        return (f"0/{n} nodes are available: {text}. preemption: 0/{n} nodes are available: "
                f"{n} Preemption is not helpful for scheduling.")

    def _schedule(self) -> None:
        from k8s.sandbox.faults import pod_faults

        usage: dict[str, list[int]] | None = None
        candidates: list[tuple[str, int, int, int]] = []
        siblings: dict[tuple[str, str], int] = {}
        for pod in self.store.all("pods"):
            if pod["spec"].get("nodeName") or not is_active(pod):
                continue
            if usage is None:
                usage, candidates = self._usage(), self._candidates()
                for other in self.store.all("pods"):
                    ref = o.controller_of(other)
                    if ref and other["spec"].get("nodeName") and is_active(other):
                        key = (ref["uid"], other["spec"]["nodeName"])
                        siblings[key] = siblings.get(key, 0) + 1
            forced = any(f.type == "unschedulable" for f in pod_faults(self, pod))
            node = None if forced else self._pick_node(pod, usage, candidates, siblings)
            if node is None:
                message = self._unschedulable_message(usage, pod, forced)
                conds = set_condition(pod["status"].get("conditions") or [], "PodScheduled", "False", "Unschedulable", message, probe_time=True)
                if conds != pod["status"].get("conditions"):
                    updated = copy(pod)
                    updated["status"] = {"phase": "Pending", "conditions": conds, "qosClass": pod["status"].get("qosClass", "Burstable")}
                    self.store.put("pods", updated)
                    self.event(updated, "Warning", "FailedScheduling", message, "default-scheduler")
                continue
            updated = copy(pod)
            updated["spec"]["nodeName"] = node
            ref = o.controller_of(pod)
            if ref:
                siblings[(ref["uid"], node)] = siblings.get((ref["uid"], node), 0) + 1
            cpu, mem = self._requests(pod["spec"])
            usage[node][0] += 1
            usage[node][1] += cpu
            usage[node][2] += mem
            self.store.put("pods", updated)
            self.event(updated, "Normal", "Scheduled",
                           f"Successfully assigned {pod['metadata']['namespace']}/{pod['metadata']['name']} to {node}",
                           "default-scheduler")

    # --- kubelet ---------------------------------------------------------------------------
    def _node_ip(self, node_name: str) -> str:
        node = self.store.get("nodes", "", node_name)
        if not node:
            return ""
        return node["status"]["addresses"][0]["address"]

    def _pod_ip(self, pod: Obj) -> str:
        if pod["status"].get("podIP"):
            return pod["status"]["podIP"]
        node = self.store.get("nodes", "", pod["spec"].get("nodeName", ""))
        base = node["spec"]["podCIDR"].rsplit(".", 1)[0] if node else "10.244.255"
        n = self._ip_next.get(base, 0)
        self._ip_next[base] = n + 1
        return f"{base}.{n % 250 + 2}"

    @staticmethod
    def _image_id(image: str) -> str:
        return o.image_id(image)

    def _kubelet(self, *, tick: bool) -> None:
        from k8s.sandbox.faults import pod_state

        for pod in self.store.all("pods"):
            node_name = pod["spec"].get("nodeName")
            if not node_name or not is_active(pod):
                continue
            node = self.store.get("nodes", "", node_name)
            # The node controller marks a lost node's pods Ready=False when it marks the node.
            node_ok = node is not None and self.node_ready(node)
            state, fault = pod_state(self, pod)
            key = (state, node_ok)
            uid = pod["metadata"]["uid"]
            restarting = state in RESTARTING_STATES and (not self.realtime or self._backoff_over(pod))
            if self._pod_keys.get(uid) == key and not (tick and restarting):
                continue
            self._pod_keys[uid] = key
            self.store.put("pods", self._pod_status(pod, state, fault, node_ok, advance=tick and restarting))

    def _liveness_events(self, pod: Obj, container: Obj) -> None:
        """What a kubelet records when a liveness probe kills a container: the probe's
        failures (a hung process fails readiness too), then the kill."""
        cname = container["name"]
        where = {"host": pod["spec"]["nodeName"], "field_path": f"spec.containers{{{cname}}}"}
        get = (container.get("livenessProbe") or {}).get("httpGet") or {}
        port = get.get("port", 8080)
        if isinstance(port, str):  # a named port: the kubelet probes the number it names
            port = next((p["containerPort"] for p in container.get("ports") or () if p.get("name") == port), port)
        url = f"{get.get('scheme', 'HTTP').lower()}://{self._pod_ip(pod)}:{port}{get.get('path', '/')}"
        self.event(pod, "Warning", "Unhealthy", f'Liveness probe failed: Get "{url}": context deadline exceeded '
                   "(Client.Timeout exceeded while awaiting headers)", "kubelet", **where)
        self.event(pod, "Warning", "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503", "kubelet", **where)
        self.event(pod, "Normal", "Killing", f"Container {cname} failed liveness probe, will be restarted", "kubelet", **where)

    @staticmethod
    def _backoff_over(pod: Obj) -> bool:
        """In real time, a crashed container restarts only once its back-off has passed."""
        for cs in (pod.get("status") or {}).get("containerStatuses") or ():
            finished = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
            if finished and "waiting" in (cs.get("state") or {}):
                backoff = BACKOFF_STEPS[min(max(cs.get("restartCount", 1) - 1, 0), len(BACKOFF_STEPS) - 1)]
                return (datetime.now(UTC) - _parse(finished)).total_seconds() >= backoff
        return True

    def _pod_status(self, pod: Obj, state: str, fault: Fault | None, node_ok: bool, *, advance: bool) -> Obj:
        updated = copy(pod)
        old = pod.get("status") or {}
        now = datetime.now(UTC)
        start = old.get("startTime") or _iso(now - timedelta(seconds=5))
        target = (fault.opts.get("container") if fault else None) or pod["spec"]["containers"][0]["name"]
        target_spec = next((c for c in pod["spec"]["containers"] if c["name"] == target), {})
        # A probe fault's pods that ran before it was injected show the failure as established:
        # started before its onset (the pod too), unready since the probe gave up on it.
        onset = (fault.onset if fault is not None and fault.onset is not None and state in ("probe_failure", "liveness_kill")
                 and pod["metadata"]["uid"] in fault.pod_uids else None)
        if onset is not None and _parse(start) > onset - timedelta(seconds=2):
            start = _iso(onset - timedelta(seconds=2))
            if _parse(pod["metadata"].get("creationTimestamp")) > onset - timedelta(seconds=3):
                updated["metadata"]["creationTimestamp"] = _iso(onset - timedelta(seconds=3))
        unready_since: datetime | None = None
        old_statuses = {cs["name"]: cs for cs in old.get("containerStatuses") or ()}
        statuses = []
        all_ready = True
        phase = "Running"
        for c in pod["spec"]["containers"]:
            prev = old_statuses.get(c["name"], {})
            restarts = prev.get("restartCount", 0)
            cs: Obj = {"name": c["name"], "image": c["image"], "imageID": self._image_id(c["image"]),
                       "started": True, "ready": True, "restartCount": restarts, "lastState": prev.get("lastState") or {}}
            running_since = ((prev.get("state") or {}).get("running") or {}).get("startedAt") or start
            cid = o.container_id(pod["metadata"]["uid"], c["name"], str(restarts))
            cs["containerID"] = cid
            cs["state"] = {"running": {"startedAt": running_since}}
            if c["name"] == target and state in RESTARTING_STATES:
                if restarts == 0 or advance:
                    restarts = max(restarts + 1, int(fault.opts.get("restarts", 4)) if fault and restarts == 0 else restarts + 1)
                oom = state == "oom_killed"
                liveness = state == "liveness_kill"
                # A liveness kill is SIGTERM, then SIGKILL when the hung process ignores it: 137,
                # reason Error (OOMKilled is the kernel's), after the probe's allowance of running.
                exit_code = 137 if oom or liveness else int(fault.opts.get("exit_code", 1) if fault else 1)
                finished = now - timedelta(seconds=2)
                ran_s = 12 if oom else (probe_allowance(target_spec.get("livenessProbe")) + 30 if liveness else 3)
                cs["lastState"] = {"terminated": {
                    "exitCode": exit_code, "reason": "OOMKilled" if oom else "Error",
                    "startedAt": _iso(finished - timedelta(seconds=ran_s)), "finishedAt": _iso(finished),
                    "containerID": o.container_id(pod["metadata"]["uid"], c["name"], str(restarts - 1)),
                }}
                backoff = BACKOFF_STEPS[min(restarts - 1, len(BACKOFF_STEPS) - 1)]
                cs["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message":
                               f"back-off {backoff // 60}m{backoff % 60}s restarting failed container={c['name']} "
                               f"pod={pod['metadata']['name']}_{pod['metadata']['namespace']}({pod['metadata']['uid']})"
                               if backoff >= 60 else
                               f"back-off {backoff}s restarting failed container={c['name']} "
                               f"pod={pod['metadata']['name']}_{pod['metadata']['namespace']}({pod['metadata']['uid']})"}}
                cs.update(restartCount=restarts, ready=False, started=False)
                if restarts != prev.get("restartCount") and liveness:
                    self._liveness_events(pod, c)
                if restarts != prev.get("restartCount"):
                    self.event(pod, "Warning", "BackOff", f"Back-off restarting failed container {c['name']} in pod "
                               f"{pod['metadata']['name']}_{pod['metadata']['namespace']}({pod['metadata']['uid']})",
                               "kubelet", host=pod["spec"]["nodeName"], field_path=f"spec.containers{{{c['name']}}}")
                    if oom:
                        self.event(pod, "Warning", "OOMKilling",
                                   f"Memory cgroup out of memory: Killed process in container {c['name']}",
                                   "kernel-monitor", host=pod["spec"]["nodeName"])
            elif c["name"] == target and state == "image_pull_failure":
                reason = "ImagePullBackOff" if (self.ticks % 2 == 0) else "ErrImagePull"
                message = (f'Back-off pulling image "{c["image"]}"' if reason == "ImagePullBackOff" else
                           f'failed to pull and unpack image "{c["image"]}": failed to resolve reference "{c["image"]}": '
                           f"{c['image']}: not found")
                cs = {"name": c["name"], "image": c["image"], "imageID": "", "started": False, "ready": False,
                      "restartCount": 0, "lastState": {}, "state": {"waiting": {"reason": reason, "message": message}}}
                phase = "Pending"
                self.event(pod, "Warning", "Failed", f'Failed to pull image "{c["image"]}": rpc error: code = NotFound desc = '
                           f'failed to pull and unpack image "{c["image"]}": not found', "kubelet",
                           host=pod["spec"]["nodeName"], field_path=f"spec.containers{{{c['name']}}}")
            elif c["name"] == target and state == "probe_failure":
                cs["ready"] = False
                if onset is not None:
                    if _parse(running_since) > onset:
                        running_since = _iso(onset)
                        cs["state"] = {"running": {"startedAt": running_since}}
                    started = _parse(running_since)
                    # Ready until the probe failed failureThreshold times in a row from the onset;
                    # a container started at the onset was never ready.
                    probe = target_spec.get("readinessProbe") or {}
                    unready_since = (started if started >= onset else
                                     onset + timedelta(seconds=int(probe.get("periodSeconds") or 10) * int(probe.get("failureThreshold") or 3)))
                self.event(pod, "Warning", "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503",
                           "kubelet", host=pod["spec"]["nodeName"], field_path=f"spec.containers{{{c['name']}}}")
            # A lost node's kubelet cannot report: container statuses stay as they were; only the
            # node controller's Ready=False condition on the pod changes (below).
            all_ready = all_ready and cs["ready"]
            statuses.append(cs)
        unready = [cs["name"] for cs in statuses if not cs["ready"]]
        conds = old.get("conditions") or []
        conds = [c for c in conds if c["type"] != "PodScheduled" or c["status"] == "True"]
        conds = set_condition(conds, "PodReadyToStartContainers", "True", None, None, probe_time=True)
        conds = set_condition(conds, "Initialized", "True", None, None, probe_time=True)
        if not node_ok:
            conds = set_condition(conds, "Ready", "False", "NodeNotReady", None, probe_time=True)
            conds = set_condition(conds, "ContainersReady", "True" if not unready else "False",
                                  None if not unready else "ContainersNotReady", None, probe_time=True)
        elif unready:
            message = f"containers with unready status: [{' '.join(unready)}]"
            conds = set_condition(conds, "Ready", "False", "ContainersNotReady", message, probe_time=True)
            conds = set_condition(conds, "ContainersReady", "False", "ContainersNotReady", message, probe_time=True)
        else:
            conds = set_condition(conds, "Ready", "True", None, None, probe_time=True)
            conds = set_condition(conds, "ContainersReady", "True", None, None, probe_time=True)
        conds = set_condition(conds, "PodScheduled", "True", None, None, probe_time=True)
        if unready_since is not None and unready and node_ok:
            # Only ever moved back: a transition recorded earlier than the story's stays.
            conds = [{**c, "lastTransitionTime": _iso(unready_since)}
                     if c["type"] in ("Ready", "ContainersReady") and c["status"] == "False"
                     and _parse(c["lastTransitionTime"]) > unready_since else c for c in conds]
        order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        conds.sort(key=lambda c: order.index(c["type"]) if c["type"] in order else 99)
        host_ip = self._node_ip(pod["spec"]["nodeName"])
        pod_ip = self._pod_ip(pod)
        updated["status"] = {
            "phase": phase, "conditions": conds, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "startTime": start,
            "containerStatuses": statuses, "qosClass": old.get("qosClass", "Burstable"),
        }
        return updated


def _micro_time(at: float) -> str:
    """A MicroTime, as the kubelet writes a lease's renewTime."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_micro_time(value: str | None) -> float:
    if not value:
        return 0.0
    for layout in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(value, layout).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return 0.0
