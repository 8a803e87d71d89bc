"""The deterministic RCA's rules: hypotheses (class, confidence, cause, evidence) drawn from the
container states, events, node conditions, log patterns and the workload's revisions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agents.rca.bundle import metadata_of, normalized_events
from k8s.detectors import BAD_ROLLOUT_WINDOW_S

# A failing newest revision younger than BAD_ROLLOUT_WINDOW_S, with an older one, is a bad
# rollout: the detectors' window, so RCA and the rules' `bad_rollout` evidence agree.

# Log categories (k8s.log_patterns) -> failure class and confidence, strongest cause first:
# a traceback that ends in "connection refused" is a dependency failure, not a crash.
_LOG_CLASSES: list[tuple[set[str], str, float]] = [
    ({"missing_config"}, "config_error", 0.85),
    ({"file_not_found"}, "config_error", 0.75),
    ({"permission_denied"}, "permission_error", 0.8),
    ({"oom"}, "oom_killed", 0.8),
    ({"disk_full"}, "resource_exhaustion", 0.8),
    ({"connection_refused", "dns_failure", "database_error", "tls_error", "timeout"}, "dependency_failure", 0.8),
    ({"auth_failure"}, "config_error", 0.6),
    ({"port_in_use"}, "config_error", 0.6),
    ({"panic", "segfault", "java_stack_trace", "python_traceback"}, "app_crash", 0.75),
]
_RBAC = re.compile(r"(?i)forbidden.{0,200}(cannot (get|list|watch|create|update|patch|delete)|serviceaccount)")
_EXEC_FORMAT = re.compile(r"(?i)exec format error")
_NO_EXECUTABLE = re.compile(r"(?i)(executable file not found|no such file or directory)")
_INSUFFICIENT = re.compile(r"(?i)insufficient (cpu|memory|ephemeral-storage|pods|[\w./-]+)|too many pods")
_NODE_TAINT = re.compile(r"(?i)node\.kubernetes\.io/(not-ready|unreachable|memory-pressure|disk-pressure|pid-pressure)")
_QUOTA = re.compile(r"(?i)exceeded quota|forbidden: exceeded")
_MISSING_REF = re.compile(r"(?i)(secret|configmap) \"?[\w.-]+\"? not found|couldn't find key|not found in (secret|configmap)")


class Case:
    """Hypotheses about one bundle; the strongest becomes the report."""

    def __init__(self) -> None:
        self.hypotheses: list[tuple[float, str, str, list[dict[str, Any]]]] = []

    def add(self, failure_class: str, confidence: float, root_cause: str, *evidence: dict[str, Any]) -> None:
        self.hypotheses.append((confidence, failure_class, root_cause, list(evidence)))

    def best(self) -> tuple[float, str, str, list[dict[str, Any]]]:
        if not self.hypotheses:
            return (0.2, "unknown", "", [])
        return max(self.hypotheses, key=lambda h: h[0])


def _log_hypotheses(case: Case, text: str, source: str, context: str) -> None:
    if not text:
        return
    from k8s.log_patterns import analyze_logs

    analysis = analyze_logs(text)
    by_pattern: dict[str, Any] = {}
    for match in analysis.matches:
        by_pattern.setdefault(match.pattern, match)
    for patterns, failure_class, confidence in _LOG_CLASSES:
        found = [by_pattern[p] for p in patterns if p in by_pattern]
        if not found:
            continue
        match = min(found, key=lambda m: m.line)
        if failure_class == "config_error" and match.pattern == "auth_failure" and _RBAC.search(text):
            failure_class, confidence = "permission_error", 0.8
        explanation = match.explanation or ""
        case.add(
            failure_class,
            confidence,
            f"{context}: {explanation or match.text}".rstrip(),
            {"source": source, "line": match.line, "detail": match.text[:300], "pattern": match.pattern},
        )
    for regex, failure_class, confidence, why in (
        (_RBAC, "permission_error", 0.85, "the Kubernetes API denies it a permission (RBAC)"),
        (_EXEC_FORMAT, "config_error", 0.85, "the image is built for another CPU architecture (exec format error)"),
    ):
        found = regex.search(text)
        if found:
            line = text.count("\n", 0, found.start()) + 1
            line_text = text.splitlines()[line - 1] if text.splitlines() else found.group(0)
            case.add(failure_class, confidence, f"{context}: {why}", {"source": source, "line": line, "detail": line_text[:300]})


def container_hypotheses(case: Case, bundle: Mapping[str, Any]) -> None:
    pod = bundle.get("pod") or {}
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    specs = {c.get("name"): c for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]}
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    crashed = probe_killed = False
    for index, cstatus in enumerate(statuses):
        name = cstatus.get("name") or "?"
        field_base = f"status.containerStatuses[{index}]"
        waiting = (cstatus.get("state") or {}).get("waiting") or {}
        terminated = (cstatus.get("state") or {}).get("terminated") or {}
        last = (cstatus.get("lastState") or {}).get("terminated") or {}
        reason = waiting.get("reason") or ""
        message = waiting.get("message") or ""
        if reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"):
            case.add(
                "image_pull_error",
                0.95,
                f"Container {name} cannot pull its image {cstatus.get('image') or ''}: {message or reason}",
                {"source": "status", "field": f"{field_base}.state.waiting.reason", "detail": f"{reason}: {message}"[:300]},
            )
        elif reason == "CreateContainerConfigError":
            case.add(
                "config_error",
                0.9,
                f"Container {name} cannot be created: {message or 'a referenced ConfigMap, Secret or key is missing'}",
                {"source": "status", "field": f"{field_base}.state.waiting.reason", "detail": f"{reason}: {message}"[:300]},
            )
        elif reason in ("CreateContainerError", "RunContainerError", "StartError"):
            if _EXEC_FORMAT.search(message) or _NO_EXECUTABLE.search(message):
                case.add("config_error", 0.85, f"Container {name} cannot start: {message}",
                         {"source": "status", "field": f"{field_base}.state.waiting.message", "detail": message[:300]})
            else:
                case.add("app_crash", 0.5, f"Container {name} fails to start: {message or reason}",
                         {"source": "status", "field": f"{field_base}.state.waiting.reason", "detail": reason})
        running_ready = bool((cstatus.get("state") or {}).get("running")) and cstatus.get("ready") is not False
        for where, term in (("state.terminated", terminated), ("lastState.terminated", last)):
            if not term or (where == "lastState.terminated" and running_ready):
                continue  # a past termination of a container that now runs and is ready is history
            code = term.get("exitCode")
            if term.get("reason") == "OOMKilled":
                limit = ((specs.get(name) or {}).get("resources") or {}).get("limits", {}).get("memory")
                case.add(
                    "oom_killed",
                    0.95,
                    f"Container {name} is killed for exceeding its memory limit ({limit or 'no limit set'}): "
                    "it needs more memory than it is given, or it leaks",
                    {"source": "status", "field": f"{field_base}.{where}.reason", "detail": f"OOMKilled, exit code {code}"},
                )
            elif code not in (None, 0):
                liveness = (specs.get(name) or {}).get("livenessProbe")
                if liveness and code in (137, 143) and term.get("reason") == "Error":
                    # Killed from outside by the kubelet, not exited on its own: what the logs say
                    # about slow dependencies is why the probe fails, the class is the probe's.
                    probe_killed = True
                    case.add("probe_failure", 0.85, f"Container {name} is restarted by its failing liveness probe",
                             {"source": "status", "field": f"{field_base}.{where}.exitCode", "detail": f"exit code {code} with a liveness probe"})
                else:
                    crashed = True
                    from k8s.log_patterns import explain_exit_code

                    meaning = explain_exit_code(int(code)) or f"exit code {code}"
                    case.add("app_crash", 0.5, f"Container {name} exits with an error ({meaning})",
                             {"source": "status", "field": f"{field_base}.{where}.exitCode", "detail": meaning})
        ready = cstatus.get("ready")
        running = (cstatus.get("state") or {}).get("running")
        if running and ready is False and (specs.get(name) or {}).get("readinessProbe"):
            case.add("probe_failure", 0.55, f"Container {name} runs but fails its readiness probe",
                     {"source": "status", "field": f"{field_base}.ready", "detail": "running, not ready"})
    if (crashed and not probe_killed) or bundle.get("job"):
        context = "The program fails"
        _log_hypotheses(case, bundle.get("previous_logs") or "", "previous_log", context)
        _log_hypotheses(case, bundle.get("logs") or "", "log", context)
    # Scheduling and eviction.
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            _scheduling_hypothesis(case, condition.get("message") or "", {"source": "status", "field": "status.conditions[PodScheduled]", "detail": (condition.get("message") or condition.get("reason") or "")[:300]})
    if status.get("reason") == "Evicted":
        message = status.get("message") or ""
        case.add("resource_exhaustion", 0.9, f"The pod was evicted: {message}",
                 {"source": "status", "field": "status.reason", "detail": f"Evicted: {message}"[:300]})


def _scheduling_hypothesis(case: Case, message: str, evidence: dict[str, Any]) -> None:
    if _INSUFFICIENT.search(message):
        case.add("resource_exhaustion", 0.9, f"No node has room for the pod: {message}", evidence)
    elif _NODE_TAINT.search(message):
        case.add("node_failure", 0.75, f"The pod cannot be placed because nodes are unhealthy: {message}", evidence)
    elif re.search(r"(?i)affinity|selector|persistentvolumeclaim", message):
        case.add("config_error", 0.7, f"The pod's placement rules or volume claims match no node: {message}", evidence)
    elif message:
        case.add("resource_exhaustion", 0.5, f"The pod cannot be scheduled: {message}", evidence)


def event_hypotheses(case: Case, bundle: Mapping[str, Any]) -> None:
    for index, event in enumerate(normalized_events(bundle)):
        reason, message = event["reason"], event["message"]
        evidence = {"source": "event", "detail": f"{reason}: {message}"[:300], "count": event["count"], "index": index}
        if reason == "FailedScheduling":
            _scheduling_hypothesis(case, message, evidence)
        elif reason == "Unhealthy" and re.search(r"(?i)(liveness|readiness|startup) probe failed", message):
            case.add("probe_failure", 0.75, f"Health checks fail while the process runs: {message}", evidence)
        elif reason in ("FailedMount", "FailedAttachVolume") and _MISSING_REF.search(message):
            case.add("config_error", 0.85, f"A volume cannot be mounted: {message}", evidence)
        elif _MISSING_REF.search(message):
            case.add("config_error", 0.85, f"A referenced ConfigMap, Secret or key is missing: {message}", evidence)
        elif reason == "FailedCreate" and _QUOTA.search(message):
            case.add("resource_exhaustion", 0.9, f"Pods cannot be created: the namespace quota is used up ({message})", evidence)
        elif reason == "FailedCreate" and _RBAC.search(message):
            case.add("permission_error", 0.8, f"Pods cannot be created: {message}", evidence)
        elif reason in ("Failed", "BackOff") and re.search(r"(?i)pull|image", message):
            # Events are history (the pod may have pulled since); the waiting state says it now.
            case.add("image_pull_error", 0.6, f"The image cannot be pulled: {message}", evidence)
        elif reason in ("Evicted", "Evicting"):
            case.add("resource_exhaustion", 0.7, f"Pods are evicted: {message}", evidence)
        elif reason in ("NodeNotReady", "NodeHasDiskPressure", "NodeHasMemoryPressure", "NodeHasInsufficientMemory"):
            case.add("node_failure", 0.8, f"The node is failing: {message or reason}", evidence)


def node_hypotheses(case: Case, bundle: Mapping[str, Any]) -> None:
    node = bundle.get("node")
    if not node:
        return
    name = metadata_of(node).get("name")
    pod_node = ((bundle.get("pod") or {}).get("spec") or {}).get("nodeName")
    if pod_node and pod_node != name:
        return  # context only: not the node the pod runs on
    # About the node itself, its state is the answer; as the host of a pod whose own container
    # shows why it fails (an exit code, a log line), it is context that ranks below that.
    weight = 0.0 if not bundle.get("pod") else 0.3
    for condition in (node.get("status") or {}).get("conditions") or []:
        ctype, cstatus = condition.get("type"), condition.get("status")
        detail = f"{ctype}={cstatus}: {condition.get('reason') or ''} {condition.get('message') or ''}".strip()
        if ctype == "Ready" and cstatus != "True":
            case.add("node_failure", 0.9 - weight, f"Node {name} is NotReady ({condition.get('message') or condition.get('reason') or 'no heartbeat'})",
                     {"source": "node", "field": "status.conditions[Ready]", "detail": detail[:300]})
        elif ctype and ctype.endswith("Pressure") and cstatus == "True":
            case.add("node_failure", 0.8 - weight, f"Node {name} is under {ctype}", {"source": "node", "field": f"status.conditions[{ctype}]", "detail": detail[:300]})


def _revision_of(obj: Mapping[str, Any]) -> int:
    try:
        return int((metadata_of(obj).get("annotations") or {}).get("deployment.kubernetes.io/revision") or 0)
    except ValueError:
        return 0


# Pod findings that come from the template (what a new revision changes), not from placement.
_REVISION_FINDINGS = frozenset({"crash_loop", "oom_killed", "image_pull_failure", "probe_failure", "high_restart_rate"})


def _rollout_hypothesis(case: Case, bundle: Mapping[str, Any], failing: bool, now: datetime) -> None:
    """A failing pod of the newest revision while an older revision still serves: a bad rollout.

    The detectors call it only when nothing is available; mid-rollout the old ReplicaSet keeps
    serving, and that is exactly when a rollback is the fix.
    """
    deployment, pod = bundle.get("deployment"), bundle.get("pod")
    replicasets = sorted(bundle.get("replicasets") or [], key=_revision_of, reverse=True)
    if not deployment or not pod or not failing or len(replicasets) < 2:
        return
    newest, older = replicasets[0], replicasets[1:]
    owners = {r.get("name") for r in metadata_of(pod).get("ownerReferences") or []}
    if metadata_of(newest).get("name") not in owners or int((newest.get("status") or {}).get("readyReplicas") or 0) > 0:
        return
    serving = [rs for rs in older if int((rs.get("status") or {}).get("readyReplicas") or 0) > 0]
    if not serving:
        # The old revision is scaled down already: call it a bad rollout only while the new
        # revision is recent (a crash long after a rollout is not the rollout's fault).
        created = metadata_of(newest).get("creationTimestamp") or ""
        try:
            age = (now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
        except ValueError:
            return
        if age > BAD_ROLLOUT_WINDOW_S:
            return
        serving = older
    cause = (metadata_of(deployment).get("annotations") or {}).get("kubernetes.io/change-cause") or ""
    underlying = case.best()
    # Above the single-cause classes: whatever the new revision broke, rolling back is the fix.
    case.add(
        "bad_rollout",
        0.97,
        f"Revision {_revision_of(newest)} of Deployment {metadata_of(deployment).get('namespace')}/{metadata_of(deployment).get('name')} fails "
        f"where revision {_revision_of(serving[0])} worked" + (f" (change: {cause})" if cause else "")
        + (f". {underlying[2]}" if underlying[1] != "unknown" else ""),
        {"source": "replicaset", "field": "metadata.annotations[deployment.kubernetes.io/revision]",
         "detail": f"{metadata_of(newest).get('name')} (revision {_revision_of(newest)}) has "
                   f"{int((newest.get('status') or {}).get('readyReplicas') or 0)} ready; {metadata_of(serving[0]).get('name')} "
                   f"(revision {_revision_of(serving[0])}) has {int((serving[0].get('status') or {}).get('readyReplicas') or 0)} ready"},
    )


def workload_hypotheses(case: Case, bundle: Mapping[str, Any], findings: list[Any], now: datetime) -> None:
    pod_failing = any(f.kind == "Pod" and f.type in _REVISION_FINDINGS for f in findings)
    _rollout_hypothesis(case, bundle, pod_failing, now)
    for finding in findings:
        if finding.type == "replication_failure" and finding.evidence.get("bad_rollout"):
            older = [o for o in finding.evidence.get("older_revisions") or [] if o.get("revision")]
            previous = max((o["revision"] for o in older), default=None)
            # Above every single-cause hypothesis: the fix is the rollback whatever the new revision broke.
            case.add(
                "bad_rollout",
                0.9,
                f"Revision {finding.evidence.get('newest_revision')} of {finding.owner_kind} {finding.namespace}/{finding.owner_name} "
                f"has no ready pods while revision {previous} worked before it",
                {"source": "deployment", "field": "status.availableReplicas", "detail": finding.message},
                {"source": "replicaset", "detail": f"newest {finding.evidence.get('newest_replicaset')}, older {older}"[:300]},
            )
        elif finding.type == "hpa_maxed":
            case.add("resource_exhaustion", 0.7, finding.message, {"source": "hpa", "field": "status.currentReplicas", "detail": finding.message})
        elif finding.type == "failed_job":
            case.add("app_crash", 0.45, finding.message, {"source": "job", "field": "status.conditions[Failed]", "detail": finding.message})

