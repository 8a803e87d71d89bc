"""The watcher's picture of one cluster: slim objects of the six kinds, indexed by the workload
that owns them, and the detectors run on the workloads an event touched.

Pure (no I/O): a list or a watch event goes in, the keys of the workloads it touched come out,
and `findings_for(keys)` runs the same detectors as the poll on just those workloads' objects.
Objects are held as compressed orjson bytes of their slim form (`k8s.slim`): 10,000 pods cost ~3 MB;
an event whose slim form equals the held one touches nothing.

A workload key is ``(kind, namespace, name)`` as `Finding.workload_key` spells it (namespace empty
for nodes): the key incidents are opened under.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from k8s.detectors import (
    Finding,
    OwnerIndex,
    detect_deployments,
    detect_hpas,
    detect_jobs,
    detect_nodes,
    detect_pods,
)
from k8s.listing import KINDS
from k8s.slim import SLIMMERS
from k8s.topology import Topology

Obj = dict[str, Any]
Key = tuple[str, str, str]  # workload: (kind, namespace, name)
Name = tuple[str, str]  # object: (namespace, name)


def _name(obj: Mapping[str, Any]) -> Name:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def _controller(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    return (ref.get("kind") or "", ref.get("name") or "") if ref else None


class _Index:
    """A many-to-one index: member -> group, and group -> members."""

    def __init__(self) -> None:
        self.group_of: dict[Any, Any] = {}
        self.members: dict[Any, set[Any]] = {}

    def set(self, member: Any, group: Any | None) -> Any | None:
        old = self.group_of.get(member)
        if old == group:
            return old
        if old is not None:
            bucket = self.members.get(old)
            if bucket is not None:
                bucket.discard(member)
                if not bucket:
                    del self.members[old]
        if group is None:
            self.group_of.pop(member, None)
        else:
            self.group_of[member] = group
            self.members.setdefault(group, set()).add(member)
        return old

    def of(self, group: Any) -> set[Any]:
        return self.members.get(group, set())


class ClusterState:
    def __init__(self) -> None:
        self.objects: dict[str, dict[Name, bytes]] = {kind: {} for kind in KINDS}
        self.pod_owner = _Index()  # pod -> workload key
        self.pod_ref = _Index()  # pod -> (controller kind, namespace, controller name)
        self.rs_deployment = _Index()  # replicaset -> (namespace, deployment)
        self.job_owner = _Index()  # job -> workload key (Job/ns/name, or CronJob/ns/name)
        self.hpa_target = _Index()  # hpa -> workload key of its scale target

    # --- reading -----------------------------------------------------------------------------
    def get(self, kind: str, name: Name) -> Obj | None:
        raw = self.objects[kind].get(name)
        return None if raw is None else orjson.loads(zlib.decompress(raw))

    def counts(self) -> dict[str, int]:
        return {kind: len(table) for kind, table in self.objects.items()}

    def workloads(self) -> set[Key]:
        """Every workload key the held objects belong to."""
        keys: set[Key] = set(self.pod_owner.members)
        keys.update(("Node", "", name) for _, name in self.objects["nodes"])
        keys.update(("Deployment", ns, name) for ns, name in self.objects["deployments"])
        keys.update(self.job_owner.members)
        keys.update(self.hpa_target.members)
        return keys

    # --- writing -----------------------------------------------------------------------------
    def apply(self, kind: str, event_type: str, obj: Obj) -> set[Key]:
        """One watch event (ADDED, MODIFIED, DELETED) of `kind`; returns the workloads it touched."""
        name = _name(obj)
        if event_type == "DELETED":
            return self._remove(kind, name)
        return self._put(kind, name, SLIMMERS[kind](obj))

    def replace(self, kind: str, items: Iterable[Obj]) -> set[Key]:
        """A fresh list of `kind` (the first, or after 410 Gone): the workloads whose objects changed,
        appeared or went away since the last picture are touched."""
        seen: set[Name] = set()
        return self.put_listed(kind, items, seen) | self.drop_unlisted(kind, seen)

    def put_listed(self, kind: str, items: Iterable[Obj], seen: set[Name]) -> set[Key]:
        """One page of a list (a caller streaming pages adds each to `seen`, then `drop_unlisted`)."""
        touched: set[Key] = set()
        for obj in items:
            name = _name(obj)
            seen.add(name)
            touched |= self._put(kind, name, SLIMMERS[kind](obj))
        return touched

    def drop_unlisted(self, kind: str, seen: set[Name]) -> set[Key]:
        """The list is complete: what it did not hold is gone."""
        touched: set[Key] = set()
        for name in [n for n in self.objects[kind] if n not in seen]:
            touched |= self._remove(kind, name)
        return touched

    def _put(self, kind: str, name: Name, slim: Obj) -> set[Key]:
        # Compressed (level 1: ~20 µs a pod): a slim pod is ~1.4 KB of JSON, a fifth of that packed.
        raw = zlib.compress(orjson.dumps(slim), 1)
        if self.objects[kind].get(name) == raw:
            return set()  # nothing the detectors read has changed
        before = self._keys_of(kind, name)
        self.objects[kind][name] = raw
        self._index(kind, name, slim)
        return before | self._keys_of(kind, name)

    def _remove(self, kind: str, name: Name) -> set[Key]:
        if name not in self.objects[kind]:
            return set()
        before = self._keys_of(kind, name)
        del self.objects[kind][name]
        self._index(kind, name, None)
        return before

    def _keys_of(self, kind: str, name: Name) -> set[Key]:
        """The workloads whose findings an object of `kind` feeds."""
        if name not in self.objects[kind]:
            return set()
        ns, obj_name = name
        if kind == "pods":
            owner = self.pod_owner.group_of.get(name)
            return {owner} if owner else set()
        if kind == "nodes":
            return {("Node", "", obj_name)}
        if kind == "deployments":
            return {("Deployment", ns, obj_name)}
        if kind == "replicasets":
            deployment = self.rs_deployment.group_of.get(name)
            return {("Deployment", *deployment)} if deployment else set()
        if kind == "jobs":
            return {self.job_owner.group_of[name]} if name in self.job_owner.group_of else set()
        target = self.hpa_target.group_of.get(name)
        return {target} if target else set()

    def _index(self, kind: str, name: Name, slim: Obj | None) -> None:
        ns = name[0]
        if kind == "pods":
            ref = _controller(slim) if slim else None
            self.pod_ref.set(name, (ref[0], ns, ref[1]) if ref else None)
            self.pod_owner.set(name, self._resolve_pod(slim) if slim else None)
        elif kind == "replicasets":
            ref = _controller(slim) if slim else None
            self.rs_deployment.set(name, (ns, ref[1]) if ref and ref[0] == "Deployment" else None)
            self._reresolve(("ReplicaSet", *name))
        elif kind == "jobs":
            if slim is None:
                self.job_owner.set(name, None)
            else:
                owner = OwnerIndex([], [slim]).owner_of_job(*name)
                self.job_owner.set(name, (owner[0], ns, owner[1]))
            self._reresolve(("Job", *name))
        elif kind == "hpas":
            target = ((slim or {}).get("spec") or {}).get("scaleTargetRef") or {}
            self.hpa_target.set(name, (target.get("kind") or "HorizontalPodAutoscaler", ns, target.get("name") or name[1])
                                if slim else None)

    def _owners_for(self, refs: Iterable[tuple[str, str, str]]) -> OwnerIndex:
        replicasets, jobs = [], []
        for kind, ns, ref_name in refs:
            table = "replicasets" if kind == "ReplicaSet" else "jobs" if kind == "Job" else ""
            held = self.get(table, (ns, ref_name)) if table else None
            if held is not None:
                (replicasets if table == "replicasets" else jobs).append(held)
        return OwnerIndex(replicasets, jobs)

    def _resolve_pod(self, pod: Obj) -> Key:
        ns, _ = _name(pod)
        ref = _controller(pod)
        owners = self._owners_for([(ref[0], ns, ref[1])] if ref else [])
        kind, owner = owners.owner_of_pod(pod)
        return (kind, ns, owner)

    def _reresolve(self, ref: tuple[str, str, str]) -> None:
        # A pod seen before its ReplicaSet or Job (their events travel on other streams) was
        # filed under a guess; the controller's arrival files it under its real workload.
        for pod_name in list(self.pod_ref.of(ref)):
            pod = self.get("pods", pod_name)
            if pod is not None:
                self.pod_owner.set(pod_name, self._resolve_pod(pod))

    def topology_for(self, keys: Iterable[Key]) -> Topology:
        """Which nodes are not ready, and where these workloads' failing pods run (correlation)."""
        topology = Topology()
        topology.add_nodes(node for node in (self.get("nodes", n) for n in list(self.objects["nodes"])) if node)
        for key in keys:
            pods = [p for p in (self.get("pods", n) for n in sorted(self.pod_owner.of(key))) if p is not None]
            topology.add_pods(pods, lambda pod, key=key: (key[0], key[2]))
        return topology

    # --- detecting ---------------------------------------------------------------------------
    def findings_for(self, keys: Iterable[Key], *, now: datetime | None = None) -> list[Finding]:
        """The detectors' findings for these workloads, exactly as a poll would report them."""
        findings: list[Finding] = []
        for key in keys:
            findings.extend(self._findings_of(key, now))
        return findings

    def _findings_of(self, key: Key, now: datetime | None) -> list[Finding]:
        kind, ns, name = key
        if kind == "Node":
            node = self.get("nodes", ("", name))
            return detect_nodes([node]) if node else []
        pods = [p for p in (self.get("pods", n) for n in sorted(self.pod_owner.of(key))) if p is not None]
        replicasets: list[Obj] = []
        jobs: list[Obj] = []
        deployment = None
        if kind == "Deployment":
            deployment = self.get("deployments", (ns, name))
            replicasets = [rs for rs in (self.get("replicasets", n) for n in sorted(self.rs_deployment.of((ns, name))))
                           if rs is not None]
        jobs = [job for job in (self.get("jobs", n) for n in sorted(self.job_owner.of(key))) if job is not None]
        hpas = [hpa for hpa in (self.get("hpas", n) for n in sorted(self.hpa_target.of(key))) if hpa is not None]
        owners = OwnerIndex(replicasets, jobs)
        if deployment is not None:
            owners.add_workload(deployment, "Deployment")
        found = [*detect_pods(pods, owners, now=now), *detect_hpas(hpas, owners), *detect_jobs(jobs, owners)]
        if deployment is not None:
            found.extend(detect_deployments([deployment], {(ns, name): replicasets}, now=now))
        wanted = f"{kind}/{ns}/{name}"
        return [finding for finding in found if finding.workload_key() == wanted]
