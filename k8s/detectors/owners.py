"""Owner resolution: the workload an operator thinks in for a pod or a Job."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from k8s.detectors.raw import controller_ref, meta, ns_name

# Labels the controllers put on each pod (a revision's hash, a pod's own name or index, a Job's
# uid): they differ between pods of one workload and between revisions, so a rule cannot mean them.
POD_ONLY_LABELS = frozenset({
    "pod-template-hash", "controller-revision-hash", "pod-template-generation",
    "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index",
    "controller-uid", "batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-completion-index",
})


class OwnerIndex:
    """Resolves a pod to the controller an operator thinks in: Deployment (via its ReplicaSet),
    StatefulSet, DaemonSet, CronJob (via its Job) or Job; the pod itself when bare."""

    def __init__(self, replicasets: Iterable[Mapping[str, Any]], jobs: Iterable[Mapping[str, Any]],
                 workloads: Iterable[Mapping[str, Any]] = ()) -> None:
        # Labels of the workloads at hand (Deployments, StatefulSets, ...: whatever the caller
        # holds), by (kind, namespace, name); a pod whose owner is not here is labelled by itself.
        self._labels: dict[tuple[str, str, str], dict[str, str]] = {}
        for workload in workloads:
            self.add_workload(workload)
        for job in jobs:
            self.add_workload(job, "Job")
        self._rs_owner: dict[tuple[str, str], tuple[str, str]] = {}
        for rs in replicasets:
            ref = controller_ref(rs)
            if ref:
                self._rs_owner[ns_name(rs)] = (ref.get("kind") or "", ref.get("name") or "")
        self._job_owner: dict[tuple[str, str], tuple[str, str]] = {}
        for job in jobs:
            ref = controller_ref(job)
            if ref:
                self._job_owner[ns_name(job)] = (ref.get("kind") or "", ref.get("name") or "")

    def owner_of_pod(self, pod: Mapping[str, Any]) -> tuple[str, str]:
        namespace, name = ns_name(pod)
        ref = controller_ref(pod)
        if not ref:
            return "Pod", name
        kind, owner = ref.get("kind") or "", ref.get("name") or ""
        if kind == "ReplicaSet":
            resolved = self._rs_owner.get((namespace, owner))
            if resolved:
                return resolved
            # The ReplicaSet was not in the dump (or was deleted): a Deployment's ReplicaSet is
            # named <deployment>-<pod-template-hash>, and the pod carries that hash as a label.
            template_hash = (meta(pod).get("labels") or {}).get("pod-template-hash")
            if template_hash and owner.endswith("-" + template_hash):
                return "Deployment", owner[: -len(template_hash) - 1]
            return "ReplicaSet", owner
        if kind == "Job":
            return self.owner_of_job(namespace, owner)
        return kind, owner

    def add_workload(self, workload: Mapping[str, Any], kind: str | None = None) -> None:
        """Remember a workload's labels for its pods' findings (`kind` where the object has none,
        as the items of a list response do)."""
        kind = kind or workload.get("kind") or ""
        labels = meta(workload).get("labels")
        if kind and labels is not None:
            self._labels[(kind, *ns_name(workload))] = dict(labels)

    def labels_of(self, kind: str, namespace: str, name: str, fallback: Mapping[str, str] | None = None) -> dict[str, str]:
        return dict(self._labels.get((kind, namespace, name), fallback or {}))

    def labels_of_pod(self, pod: Mapping[str, Any], owner_kind: str, owner_name: str) -> dict[str, str]:
        """The owning workload's labels when known, else the pod's own minus per-revision ones."""
        namespace = ns_name(pod)[0]
        known = self._labels.get((owner_kind, namespace, owner_name))
        if known is not None:
            return dict(known)
        return {k: v for k, v in (meta(pod).get("labels") or {}).items() if k not in POD_ONLY_LABELS}

    def owner_of_job(self, namespace: str, name: str) -> tuple[str, str]:
        # A CronJob's Jobs get a new name each run; the incident belongs to the CronJob.
        resolved = self._job_owner.get((namespace, name))
        if resolved and resolved[0] == "CronJob":
            return resolved
        return "Job", name
