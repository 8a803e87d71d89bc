"""Detectors: pure functions from the raw API JSON of a cluster to a list of `Finding`s.

Input is what the API server returns (``kubectl get ... -o json`` items, or a list
response's ``items`` parsed with orjson): dicts with camelCase keys, never the
kubernetes client's models. Nothing here does I/O, so the same code runs in the poll,
in ``manage.py detect`` on an offline dump, and in unit tests.

A finding names the resource it was seen on (``kind``/``namespace``/``name``; ``pod`` for
pod findings) and the workload that owns it (``owner_kind``/``owner_name``): pods are
renamed on every restart, so incidents are keyed by the owner (`Finding.workload_key`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from k8s.log_patterns import explain_exit_code

CRITICAL = "critical"
WARNING = "warning"
INFO = "info"
SEVERITIES = (CRITICAL, WARNING, INFO)

# Finding types (DESIGN.md "Names"), most specific first: an incident's primary type is the
# first of its types in this order.
PRIMARY_ORDER = (
    "cluster_unreachable",
    "not_ready_node",
    "oom_killed",
    "image_pull_failure",
    "crash_loop",
    "probe_failure",
    "unschedulable",
    "failed_job",
    "evicted",
    "high_restart_rate",
    "replication_failure",
    "hpa_maxed",
)
FINDING_TYPES = frozenset(PRIMARY_ORDER)

IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
# A container that cannot even be created (missing ConfigMap/Secret key, bad command) never
# runs; kubelet retries it forever, which to an operator is a crash loop with a config cause.
START_FAILURE_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError", "StartError"})

# A running container "keeps restarting" (high_restart_rate, or oom_killed / probe_failure by the
# last termination's reason) with at least this many restarts, at this average rate, in a pod at
# least this old, the last restart within twice the average interval (see _restart_rate).
HIGH_RESTART_MIN = 5
HIGH_RESTART_PER_HOUR = 3.0
HIGH_RESTART_MIN_AGE_S = 600
# A deployment younger than this has not had a chance to become available yet.
DEPLOYMENT_GRACE_S = 60
# A failing newest revision created within this window, after an older one that worked, is a bad
# rollout (a rollback is the fix); after it, a failure is the running revision's own problem.
# agents/rca (rules) judges rollouts with the same window.
BAD_ROLLOUT_WINDOW_S = 6 * 3600
# A Recreate rollout scales the old ReplicaSet down (and waits for its pods to terminate) before it
# creates the new one, so the deployment may lose availability a little before the new revision.
ROLLOUT_SLACK_S = 600


@dataclass(frozen=True)
class Finding:
    type: str
    severity: str
    kind: str
    namespace: str
    name: str
    owner_kind: str
    owner_name: str
    message: str
    evidence: dict[str, Any] = field(compare=False, hash=False)
    pod: str = ""

    def workload_key(self) -> str:
        """``Kind/namespace/name`` of the owning workload (namespace empty for nodes)."""
        return f"{self.owner_kind}/{self.namespace}/{self.owner_name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "severity": self.severity,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "owner_kind": self.owner_kind,
            "owner_name": self.owner_name,
            "pod": self.pod,
            "message": self.message,
            "evidence": self.evidence,
        }


def primary_type(types: Iterable[str]) -> str:
    present = set(types)
    for candidate in PRIMARY_ORDER:
        if candidate in present:
            return candidate
    return sorted(present)[0] if present else ""


# --- small readers over raw JSON ---------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _ns_name(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = _meta(obj)
    return meta.get("namespace") or "", meta.get("name") or ""


def _controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs = _meta(obj).get("ownerReferences") or []
    for ref in refs:
        if ref.get("controller"):
            return ref
    return refs[0] if refs else None


def parse_time(value: str | None) -> datetime | None:
    """RFC 3339 as the API writes it (``2026-11-23T15:04:05Z``, maybe with fractions)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _age_s(value: str | None, now: datetime) -> float | None:
    moment = parse_time(value)
    return None if moment is None else (now - moment).total_seconds()


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


# --- owner resolution ----------------------------------------------------------------------------


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
            ref = _controller_ref(rs)
            if ref:
                self._rs_owner[_ns_name(rs)] = (ref.get("kind") or "", ref.get("name") or "")
        self._job_owner: dict[tuple[str, str], tuple[str, str]] = {}
        for job in jobs:
            ref = _controller_ref(job)
            if ref:
                self._job_owner[_ns_name(job)] = (ref.get("kind") or "", ref.get("name") or "")

    def owner_of_pod(self, pod: Mapping[str, Any]) -> tuple[str, str]:
        namespace, name = _ns_name(pod)
        ref = _controller_ref(pod)
        if not ref:
            return "Pod", name
        kind, owner = ref.get("kind") or "", ref.get("name") or ""
        if kind == "ReplicaSet":
            resolved = self._rs_owner.get((namespace, owner))
            if resolved:
                return resolved
            # The ReplicaSet was not in the dump (or was deleted): a Deployment's ReplicaSet is
            # named <deployment>-<pod-template-hash>, and the pod carries that hash as a label.
            template_hash = (_meta(pod).get("labels") or {}).get("pod-template-hash")
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
        labels = _meta(workload).get("labels")
        if kind and labels is not None:
            self._labels[(kind, *_ns_name(workload))] = dict(labels)

    def labels_of(self, kind: str, namespace: str, name: str, fallback: Mapping[str, str] | None = None) -> dict[str, str]:
        return dict(self._labels.get((kind, namespace, name), fallback or {}))

    def labels_of_pod(self, pod: Mapping[str, Any], owner_kind: str, owner_name: str) -> dict[str, str]:
        """The owning workload's labels when known, else the pod's own minus per-revision ones."""
        namespace = _ns_name(pod)[0]
        known = self._labels.get((owner_kind, namespace, owner_name))
        if known is not None:
            return dict(known)
        return {k: v for k, v in (_meta(pod).get("labels") or {}).items() if k not in POD_ONLY_LABELS}

    def owner_of_job(self, namespace: str, name: str) -> tuple[str, str]:
        # A CronJob's Jobs get a new name each run; the incident belongs to the CronJob.
        resolved = self._job_owner.get((namespace, name))
        if resolved and resolved[0] == "CronJob":
            return resolved
        return "Job", name


# --- pods --------------------------------------------------------------------------------------


def _container_specs(pod: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    spec = pod.get("spec") or {}
    specs: dict[str, Mapping[str, Any]] = {}
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            specs[container.get("name") or ""] = container
    return specs


def _memory_limit(container_spec: Mapping[str, Any] | None) -> str | None:
    if not container_spec:
        return None
    return ((container_spec.get("resources") or {}).get("limits") or {}).get("memory")


def _terminated_evidence(terminated: Mapping[str, Any]) -> dict[str, Any]:
    code = terminated.get("exitCode")
    evidence: dict[str, Any] = {
        "exit_code": code,
        "reason": terminated.get("reason") or "",
        "finished_at": terminated.get("finishedAt"),
    }
    if isinstance(code, int):
        explanation = explain_exit_code(code)
        if explanation:
            evidence["exit_code_explained"] = explanation
    return evidence


def _looks_like_liveness_kill(terminated: Mapping[str, Any], container_spec: Mapping[str, Any] | None) -> bool:
    # Kubelet kills a container that fails its liveness probe with SIGTERM, then SIGKILL after the
    # grace period: it ends as reason "Error" with 143 or 137 (137 with "OOMKilled" is the kernel).
    return bool(
        container_spec
        and container_spec.get("livenessProbe")
        and terminated.get("reason") == "Error"
        and terminated.get("exitCode") in (137, 143)
    )


def _restart_rate(restarts: int, last: Mapping[str, Any], start_time: str | None, now: datetime) -> float | None:
    """Restarts per hour of a container that is still restarting, else None.

    A rate needs a window (a pod younger than HIGH_RESTART_MIN_AGE_S that fails is a crash loop's
    business), and "still": the last restart came within twice the average interval between
    restarts. So a container that restarts every 10 minutes stays flagged, and one whose crashes
    were fixed stops being flagged after twice its old rhythm, with no history kept anywhere.
    """
    if restarts < HIGH_RESTART_MIN or not last:
        return None
    age = _age_s(start_time, now)
    since_last = _age_s(last.get("finishedAt"), now)
    if age is None or since_last is None or age < HIGH_RESTART_MIN_AGE_S:
        return None
    rate = restarts / (age / 3600)
    if rate < HIGH_RESTART_PER_HOUR or since_last > 2 * age / restarts:
        return None
    return rate


def _detect_pod(pod: Mapping[str, Any], owners: OwnerIndex, now: datetime) -> list[Finding]:
    meta = _meta(pod)
    if meta.get("deletionTimestamp"):
        return []  # being deleted: whatever it shows now is on its way out
    status = pod.get("status") or {}
    phase = status.get("phase") or ""
    if phase == "Succeeded":
        return []  # a completed Job's pod
    namespace, name = _ns_name(pod)
    owner_kind, owner_name = owners.owner_of_pod(pod)
    findings: list[Finding] = []
    labels: dict[str, str] | None = None

    def add(type_: str, severity: str, message: str, evidence: dict[str, Any]) -> None:
        nonlocal labels
        if labels is None:
            labels = owners.labels_of_pod(pod, owner_kind, owner_name)
        findings.append(
            Finding(type_, severity, "Pod", namespace, name, owner_kind, owner_name, message,
                    {**evidence, "labels": dict(labels)}, pod=name)
        )

    if phase == "Failed" and status.get("reason") == "Evicted":
        add("evicted", WARNING, f"Pod {namespace}/{name} was evicted: {status.get('message') or 'no reason given'}",
            {"reason": "Evicted", "status_message": status.get("message") or "", "node": (pod.get("spec") or {}).get("nodeName") or ""})
        return findings

    if phase == "Pending":
        scheduled = _condition(pod, "PodScheduled")
        if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            add("unschedulable", WARNING, f"Pod {namespace}/{name} cannot be scheduled: {scheduled.get('message') or 'no node fits'}",
                {"reason": "Unschedulable", "scheduler_message": scheduled.get("message") or "",
                 "since": scheduled.get("lastTransitionTime")})

    specs = _container_specs(pod)
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    for cstatus in statuses:
        cname = cstatus.get("name") or ""
        cspec = specs.get(cname)
        state = cstatus.get("state") or {}
        last = (cstatus.get("lastState") or {}).get("terminated") or {}
        restarts = int(cstatus.get("restartCount") or 0)
        waiting = state.get("waiting") or {}
        running = state.get("running")
        terminated_now = state.get("terminated") or {}
        base = {"container": cname, "restart_count": restarts, "image": cstatus.get("image") or ""}
        reason = waiting.get("reason") or ""

        if reason in IMAGE_PULL_REASONS:
            add("image_pull_failure", WARNING,
                f"Container {cname} of pod {namespace}/{name} cannot pull image {cstatus.get('image') or '?'}: {reason}",
                {**base, "reason": reason, "waiting_message": waiting.get("message") or ""})
            continue

        if reason == "CrashLoopBackOff" or reason in START_FAILURE_REASONS:
            evidence = {**base, "waiting_reason": reason, "waiting_message": waiting.get("message") or ""}
            if last:
                evidence["last_termination"] = _terminated_evidence(last)
            # The last termination decides: a crash loop whose container was OOM-killed is an OOM.
            if last.get("reason") == "OOMKilled":
                add("oom_killed", CRITICAL,
                    f"Container {cname} of pod {namespace}/{name} is OOM-killed in a loop ({restarts} restarts, memory limit {_memory_limit(cspec) or 'none'})",
                    {**evidence, "memory_limit": _memory_limit(cspec)})
                continue
            # Killed by its liveness probe and backing off before the next start: the process did
            # not crash, the probe killed it, so the probe is the finding (crash_loop would send
            # the operator to the logs of a process that hung rather than died).
            if reason == "CrashLoopBackOff" and _looks_like_liveness_kill(last, cspec):
                add("probe_failure", CRITICAL,
                    f"Container {cname} of pod {namespace}/{name} is killed by its liveness probe and in {reason} ({restarts} restarts, "
                    f"last exit code {last.get('exitCode')})",
                    {**evidence, "probe": "liveness"})
                continue
            add("crash_loop", CRITICAL,
                f"Container {cname} of pod {namespace}/{name} is in {reason} ({restarts} restarts"
                + (f", last exit code {last.get('exitCode')}" if last else "") + ")",
                evidence)
            continue

        if terminated_now.get("reason") == "OOMKilled":
            add("oom_killed", CRITICAL,
                f"Container {cname} of pod {namespace}/{name} was OOM-killed (memory limit {_memory_limit(cspec) or 'none'})",
                {**base, "last_termination": _terminated_evidence(terminated_now), "memory_limit": _memory_limit(cspec)})
            continue

        if not running:
            continue
        if cstatus.get("ready") is False and cspec and cspec.get("readinessProbe") and cname in {
            c.get("name") for c in (pod.get("spec") or {}).get("containers") or []
        }:
            probe = cspec["readinessProbe"]
            # Not ready inside the probe's own start-up allowance is normal, not a failure.
            allowance = int(probe.get("initialDelaySeconds") or 0) + int(probe.get("periodSeconds") or 10) * int(
                probe.get("failureThreshold") or 3
            )
            running_for = _age_s(running.get("startedAt"), now)
            if running_for is not None and running_for > allowance:
                # How long it has been failing is the Ready condition's age (a container that ran
                # for days and failed a minute ago has failed for a minute), at most its run time.
                ready_cond = _condition(pod, "Ready")
                unready_for = _age_s((ready_cond or {}).get("lastTransitionTime"), now) if (ready_cond or {}).get("status") == "False" else None
                failing_for = int(min(running_for, unready_for) if unready_for is not None else running_for)
                add("probe_failure", WARNING,
                    f"Container {cname} of pod {namespace}/{name} is running but failing its readiness probe (unready for {failing_for}s)",
                    {**base, "probe": "readiness", "running_for_s": int(running_for), "unready_for_s": failing_for,
                     "allowance_s": allowance})
                continue
        rate = _restart_rate(restarts, last, status.get("startTime"), now)
        if rate is None:
            continue  # old restarts, running now: healthy
        evidence = {**base, "restarts_per_hour": round(rate, 2), "last_termination": _terminated_evidence(last)}
        # Restarting often while running in between: the last termination says why.
        if last.get("reason") == "OOMKilled":
            add("oom_killed", CRITICAL,
                f"Container {cname} of pod {namespace}/{name} keeps being OOM-killed ({restarts} restarts, {rate:.1f}/h, memory limit {_memory_limit(cspec) or 'none'})",
                {**evidence, "memory_limit": _memory_limit(cspec)})
        elif _looks_like_liveness_kill(last, cspec):
            add("probe_failure", WARNING,
                f"Container {cname} of pod {namespace}/{name} keeps being restarted by its liveness probe ({restarts} restarts, {rate:.1f}/h)",
                {**evidence, "probe": "liveness"})
        else:
            add("high_restart_rate", WARNING,
                f"Container {cname} of pod {namespace}/{name} restarted {restarts} times ({rate:.1f}/h)", evidence)
    return findings


# --- nodes, deployments, HPAs, jobs ----------------------------------------------------------------


def _detect_node(node: Mapping[str, Any]) -> list[Finding]:
    _, name = _ns_name(node)
    ready = _condition(node, "Ready")
    if ready is not None and ready.get("status") == "True":
        return []
    pressures = [
        c.get("type")
        for c in (node.get("status") or {}).get("conditions") or []
        if c.get("type", "").endswith("Pressure") and c.get("status") == "True"
    ]
    state = "Unknown" if ready is None else ready.get("status")
    evidence = {
        "ready": state,
        "reason": (ready or {}).get("reason") or "",
        "condition_message": (ready or {}).get("message") or "",
        "since": (ready or {}).get("lastTransitionTime"),
        "unschedulable": bool((node.get("spec") or {}).get("unschedulable")),
        "pressure": pressures,
        "labels": dict(_meta(node).get("labels") or {}),
    }
    detail = (ready or {}).get("message") or (ready or {}).get("reason") or "no Ready condition"
    return [Finding("not_ready_node", CRITICAL, "Node", "", name, "Node", name,
                    f"Node {name} is not ready (Ready={state}): {detail}", evidence)]


def _revision(obj: Mapping[str, Any]) -> int:
    try:
        return int((_meta(obj).get("annotations") or {}).get("deployment.kubernetes.io/revision") or 0)
    except ValueError:
        return 0


def _rs_counts(rs: Mapping[str, Any]) -> tuple[int, int]:
    status = rs.get("status") or {}
    return int(status.get("replicas") or 0), int(status.get("readyReplicas") or 0)


def _is_bad_rollout(deployment: Mapping[str, Any], newest: Mapping[str, Any], older: list[Mapping[str, Any]],
                    newest_age: float | None, now: datetime) -> bool:
    """The failing pods are the newest ReplicaSet's, that revision is recent, and the one before worked.

    The seeded rule proposes a rollback (a HIGH action) on this flag and outranks crash_loop and
    probe_failure, so every part must hold; a deployment that rolled out days ago and starts
    failing now is not a rollout's fault, whatever revisions it has.
    """
    if not older or newest_age is None or newest_age > BAD_ROLLOUT_WINDOW_S:
        return False
    replicas, ready = _rs_counts(newest)
    if replicas == 0 or ready > 0:
        return False  # the newest revision has no pods to fail, or some of them work
    if any(r > rd for r, rd in map(_rs_counts, older) if r):
        return False  # pods of an older revision fail too: not this rollout's doing
    # The older revision was healthy: it still has ready pods (a RollingUpdate stops there),
    # or the deployment lost availability only once this rollout began (a Recreate rollout
    # scales the old ReplicaSet to 0 first, so its status no longer shows it ever ran).
    if any(_rs_counts(rs)[1] > 0 for rs in older):
        return True
    available = _condition(deployment, "Available")
    if available is None:
        # No condition to tell (an old dump): a revision the controller stamped ran before.
        return any(_revision(rs) > 0 for rs in older)
    if available.get("status") == "True":
        return False
    lost_for = _age_s(available.get("lastTransitionTime"), now)
    return lost_for is not None and lost_for <= newest_age + ROLLOUT_SLACK_S


def _detect_deployment(deployment: Mapping[str, Any], rs_by_owner: Mapping[tuple[str, str], list[Mapping[str, Any]]], now: datetime) -> list[Finding]:
    namespace, name = _ns_name(deployment)
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = spec.get("replicas", 1)
    available = int(status.get("availableReplicas") or 0)
    if not desired or available > 0 or spec.get("paused"):
        return []
    age = _age_s(_meta(deployment).get("creationTimestamp"), now)
    if age is not None and age < DEPLOYMENT_GRACE_S:
        return []
    replicasets = sorted(rs_by_owner.get((namespace, name), []), key=_revision, reverse=True)
    evidence: dict[str, Any] = {
        "desired_replicas": desired,
        "available_replicas": available,
        "ready_replicas": int(status.get("readyReplicas") or 0),
        "updated_replicas": int(status.get("updatedReplicas") or 0),
        "bad_rollout": False,
        "labels": dict(_meta(deployment).get("labels") or {}),
    }
    progressing = _condition(deployment, "Progressing")
    if progressing:
        evidence["progressing_reason"] = progressing.get("reason") or ""
    if replicasets:
        newest = replicasets[0]
        older = replicasets[1:]
        evidence["newest_replicaset"] = _ns_name(newest)[1]
        evidence["newest_revision"] = _revision(newest)
        newest_age = _age_s(_meta(newest).get("creationTimestamp"), now)
        if newest_age is not None:
            evidence["newest_revision_age_s"] = int(newest_age)
        evidence["older_revisions"] = [
            {"replicaset": _ns_name(rs)[1], "revision": _revision(rs),
             "replicas": int((rs.get("status") or {}).get("replicas") or 0),
             "ready": int((rs.get("status") or {}).get("readyReplicas") or 0)}
            for rs in older
        ]
        evidence["bad_rollout"] = _is_bad_rollout(deployment, newest, older, newest_age, now)
    message = f"Deployment {namespace}/{name} wants {desired} replicas and has none available"
    if evidence["bad_rollout"]:
        message += (f" (revision {evidence['newest_revision']}, rolled out {evidence['newest_revision_age_s']}s ago, is failing; "
                    f"revision {evidence['older_revisions'][0]['revision']} worked)")
    return [Finding("replication_failure", CRITICAL, "Deployment", namespace, name, "Deployment", name, message, evidence)]


def _detect_hpa(hpa: Mapping[str, Any], owners: OwnerIndex | None) -> list[Finding]:
    namespace, name = _ns_name(hpa)
    spec = hpa.get("spec") or {}
    status = hpa.get("status") or {}
    maximum = spec.get("maxReplicas")
    current = status.get("currentReplicas") or 0
    if not maximum or current < maximum:
        return []
    limited = _condition(hpa, "ScalingLimited")
    if limited is not None:
        if limited.get("status") != "True" or limited.get("reason") != "TooManyReplicas":
            return []
    elif int(status.get("desiredReplicas") or 0) < maximum:
        return []
    target = spec.get("scaleTargetRef") or {}
    owner_kind, owner_name = target.get("kind") or "HorizontalPodAutoscaler", target.get("name") or name
    return [Finding("hpa_maxed", WARNING, "HorizontalPodAutoscaler", namespace, name, owner_kind, owner_name,
                    f"HPA {namespace}/{name} is at its maximum of {maximum} replicas and wants more",
                    {"max_replicas": maximum, "current_replicas": current,
                     "desired_replicas": status.get("desiredReplicas"),
                     "condition_message": (limited or {}).get("message") or "",
                     "labels": owners.labels_of(owner_kind, namespace, owner_name, _meta(hpa).get("labels"))
                     if owners else dict(_meta(hpa).get("labels") or {})})]


def _detect_job(job: Mapping[str, Any], owners: OwnerIndex) -> list[Finding]:
    failed = _condition(job, "Failed")
    if not failed or failed.get("status") != "True":
        return []
    namespace, name = _ns_name(job)
    owner_kind, owner_name = owners.owner_of_job(namespace, name)
    status = job.get("status") or {}
    reason = failed.get("reason") or "Failed"
    return [Finding("failed_job", WARNING, "Job", namespace, name, owner_kind, owner_name,
                    f"Job {namespace}/{name} failed: {reason}" + (f" ({failed.get('message')})" if failed.get("message") else ""),
                    {"reason": reason, "condition_message": failed.get("message") or "",
                     "failed_pods": int(status.get("failed") or 0),
                     "backoff_limit": (job.get("spec") or {}).get("backoffLimit"),
                     "since": failed.get("lastTransitionTime"),
                     "labels": dict(_meta(job).get("labels") or {})})]


def replicasets_by_deployment(replicasets: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    by_owner: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for rs in replicasets:
        ref = _controller_ref(rs)
        if ref and ref.get("kind") == "Deployment":
            by_owner.setdefault((_ns_name(rs)[0], ref.get("name") or ""), []).append(rs)
    return by_owner


# Per-kind entry points, so a caller can stream pages through them (the poll holds only the
# ReplicaSets and Jobs that owner resolution needs, never all pods at once).
def detect_pods(pods: Iterable[Mapping[str, Any]], owners: OwnerIndex, *, now: datetime | None = None) -> list[Finding]:
    now = now or datetime.now(UTC)
    return [finding for pod in pods for finding in _detect_pod(pod, owners, now)]


def detect_nodes(nodes: Iterable[Mapping[str, Any]]) -> list[Finding]:
    return [finding for node in nodes for finding in _detect_node(node)]


def detect_deployments(deployments: Iterable[Mapping[str, Any]],
                       rs_by_deployment: Mapping[tuple[str, str], list[Mapping[str, Any]]], *,
                       now: datetime | None = None) -> list[Finding]:
    now = now or datetime.now(UTC)
    return [finding for deployment in deployments for finding in _detect_deployment(deployment, rs_by_deployment, now)]


def detect_hpas(hpas: Iterable[Mapping[str, Any]], owners: OwnerIndex | None = None) -> list[Finding]:
    """`owners` (when it holds the target workloads) labels a finding with its target's labels."""
    return [finding for hpa in hpas for finding in _detect_hpa(hpa, owners)]


def detect_jobs(jobs: Iterable[Mapping[str, Any]], owners: OwnerIndex) -> list[Finding]:
    return [finding for job in jobs for finding in _detect_job(job, owners)]


def detect(
    pods: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    deployments: Iterable[Mapping[str, Any]],
    replicasets: Iterable[Mapping[str, Any]],
    hpas: Iterable[Mapping[str, Any]],
    jobs: Iterable[Mapping[str, Any]],
    *,
    now: datetime | None = None,
) -> list[Finding]:
    """Every problem visible in these objects; healthy objects yield nothing."""
    now = now or datetime.now(UTC)
    replicasets = list(replicasets)
    jobs = list(jobs)
    deployments = list(deployments)
    owners = OwnerIndex(replicasets, jobs)
    for deployment in deployments:
        owners.add_workload(deployment, "Deployment")
    return [
        *detect_nodes(nodes),
        *detect_pods(pods, owners, now=now),
        *detect_deployments(deployments, replicasets_by_deployment(replicasets), now=now),
        *detect_hpas(hpas, owners),
        *detect_jobs(jobs, owners),
    ]


def split_list(items: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Sort the items of a mixed ``kubectl get pods,nodes,... -o json`` List by kind."""
    buckets: dict[str, list[Mapping[str, Any]]] = {
        "pods": [], "nodes": [], "deployments": [], "replicasets": [], "hpas": [], "jobs": []
    }
    keys = {"Pod": "pods", "Node": "nodes", "Deployment": "deployments", "ReplicaSet": "replicasets",
            "HorizontalPodAutoscaler": "hpas", "Job": "jobs"}
    for item in items:
        key = keys.get(item.get("kind") or "")
        if key:
            buckets[key].append(item)
    return buckets
