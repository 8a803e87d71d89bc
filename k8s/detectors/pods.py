"""Pod findings: crash loops, OOM kills, image pulls, probes, evictions, scheduling, restart rates."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from k8s.detectors.findings import CRITICAL, WARNING, Finding
from k8s.detectors.owners import OwnerIndex
from k8s.detectors.raw import age_s, condition, meta, ns_name
from k8s.log_patterns import explain_exit_code

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
    age = age_s(start_time, now)
    since_last = age_s(last.get("finishedAt"), now)
    if age is None or since_last is None or age < HIGH_RESTART_MIN_AGE_S:
        return None
    rate = restarts / (age / 3600)
    if rate < HIGH_RESTART_PER_HOUR or since_last > 2 * age / restarts:
        return None
    return rate


def detect_pod(pod: Mapping[str, Any], owners: OwnerIndex, now: datetime) -> list[Finding]:
    metadata = meta(pod)
    if metadata.get("deletionTimestamp"):
        return []  # being deleted: whatever it shows now is on its way out
    status = pod.get("status") or {}
    phase = status.get("phase") or ""
    if phase == "Succeeded":
        return []  # a completed Job's pod
    namespace, name = ns_name(pod)
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
        scheduled = condition(pod, "PodScheduled")
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
            running_for = age_s(running.get("startedAt"), now)
            if running_for is not None and running_for > allowance:
                # How long it has been failing is the Ready condition's age (a container that ran
                # for days and failed a minute ago has failed for a minute), at most its run time.
                ready_cond = condition(pod, "Ready")
                unready_for = age_s((ready_cond or {}).get("lastTransitionTime"), now) if (ready_cond or {}).get("status") == "False" else None
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
