"""The deterministic RCA's rules: hypotheses (class, confidence, cause, evidence) drawn from the
container states, events, node conditions, log patterns and the workload's revisions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agents.rca.bundle import metadata_of
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
    ({"panic", "segfault", "java_stack_trace", "python_traceback", "unhandled_exception"}, "app_crash", 0.75),
]
RBAC = re.compile(r"(?i)forbidden.{0,200}(cannot (get|list|watch|create|update|patch|delete)|serviceaccount)")
_EXEC_FORMAT = re.compile(r"(?i)exec format error")
_NO_EXECUTABLE = re.compile(r"(?i)(executable file not found|no such file or directory)")
QUOTA = re.compile(r"(?i)exceeded quota|forbidden: exceeded")
MISSING_REF = re.compile(r"(?i)(secret|configmap)s? \"?[\w.-]+\"? not found|couldn't find key|not found in (secret|configmap)")
# Exit codes that name a crash of the program itself (SIGILL, SIGABRT, SIGFPE, SIGSEGV); any other
# exit code says only that it stopped, not why: without a log line that says why, that is `unknown`.
_CRASH_EXIT_CODES = frozenset({132, 134, 136, 139})
# Log classes that explain a process the kubelet then killed for failing its liveness probe (it had
# run out of memory, or waits on a dependency), or that keeps a running container unready.
_UNDERLYING = ("oom_killed", "dependency_failure", "config_error", "permission_error", "resource_exhaustion")
_WAITING_FOR = re.compile(r"(?im)^.{0,80}\bwait(?:ing)?\b.{0,20}\b(?:for|until|on)\b.{0,120}$")
# An init container still running this long while the pod is Pending is stuck, not starting.
_INIT_STUCK_S = 120


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


def _log_hypotheses(case: Case, text: str, source: str, context: str) -> list[tuple[float, str, str, list[dict[str, Any]]]]:
    """Hypotheses from a log's failure signatures; returns those it added."""
    if not text:
        return []
    before = len(case.hypotheses)
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
        if failure_class == "config_error" and match.pattern == "auth_failure" and RBAC.search(text):
            failure_class, confidence = "permission_error", 0.8
        explanation = match.explanation or ""
        case.add(
            failure_class,
            confidence,
            f"{context}: {explanation or match.text}".rstrip(),
            {"source": source, "line": match.line, "detail": match.text[:300], "pattern": match.pattern},
        )
    for regex, failure_class, confidence, why in (
        (RBAC, "permission_error", 0.85, "the Kubernetes API denies it a permission (RBAC)"),
        (_EXEC_FORMAT, "config_error", 0.85, "the image is built for another CPU architecture (exec format error)"),
    ):
        found = regex.search(text)
        if found:
            line = text.count("\n", 0, found.start()) + 1
            line_text = text.splitlines()[line - 1] if text.splitlines() else found.group(0)
            case.add(failure_class, confidence, f"{context}: {why}", {"source": source, "line": line, "detail": line_text[:300]})
    return case.hypotheses[before:]


def container_hypotheses(case: Case, bundle: Mapping[str, Any], findings: list[Any], now: datetime) -> None:
    pod = bundle.get("pod") or {}
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    specs = {c.get("name"): c for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]}
    init_statuses = status.get("initContainerStatuses") or []
    statuses = [*init_statuses, *(status.get("containerStatuses") or [])]
    restarting_containers = {f.evidence.get("container") for f in findings
                             if f.kind == "Pod" and f.type in ("high_restart_rate", "oom_killed", "probe_failure") and f.evidence.get("restarts_per_hour")}
    unready_containers = {f.evidence.get("container") for f in findings
                          if f.kind == "Pod" and f.type == "probe_failure" and f.evidence.get("probe") == "readiness"}
    crashed = probe_killed = unready = False
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
        state = cstatus.get("state") or {}
        running = state.get("running")
        running_ready = bool(running) and cstatus.get("ready") is not False
        # A container the detectors call restarting (restart rate, OOM or liveness kills while it
        # runs between them): its last termination is the current problem, not history.
        restarting = name in restarting_containers
        for where, term in (("state.terminated", terminated), ("lastState.terminated", last)):
            if not term:
                continue
            code = term.get("exitCode")
            if where == "lastState.terminated" and running_ready and not restarting:
                if term.get("reason") == "OOMKilled":
                    case.add("oom_killed", 0.7, f"Container {name} runs now, but its last restart was an OOM kill (memory limit "
                             f"{_memory_limit(specs.get(name)) or 'not set'}): it needs more memory at its peaks, or leaks",
                             {"source": "status", "field": f"{field_base}.{where}.reason", "detail": f"OOMKilled, exit code {code}, finished {term.get('finishedAt')}"})
                continue  # any other past termination of a container that now runs and is ready is history
            if term.get("reason") == "OOMKilled":
                case.add(
                    "oom_killed",
                    0.95,
                    f"Container {name} is killed for exceeding its memory limit ({_memory_limit(specs.get(name)) or 'no limit set'}): "
                    "it needs more memory than it is given, or it leaks",
                    {"source": "status", "field": f"{field_base}.{where}.reason", "detail": f"OOMKilled, exit code {code}"},
                )
            elif code not in (None, 0):
                from k8s.log_patterns import explain_exit_code

                meaning = explain_exit_code(int(code)) or f"exit code {code}"
                evidence = {"source": "status", "field": f"{field_base}.{where}.exitCode", "detail": meaning}
                liveness = (specs.get(name) or {}).get("livenessProbe")
                if liveness and code in (137, 143) and term.get("reason") == "Error":
                    # Killed from outside by the kubelet, not exited on its own; unless its log says
                    # what had gone wrong first (below), the probe is the answer.
                    probe_killed = True
                    case.add("probe_failure", 0.85, f"Container {name} is restarted by its failing liveness probe",
                             {**evidence, "detail": f"exit code {code} with a liveness probe"})
                elif int(code) in _CRASH_EXIT_CODES:
                    crashed = True
                    case.add("app_crash", 0.6, f"Container {name} crashes ({meaning})", evidence)
                else:
                    crashed = True
                    case.add("unknown", 0.3, f"Container {name} exits with {meaning.split(':')[0]} and nothing in the bundle says why", evidence)
        ready = cstatus.get("ready")
        if running and ready is False and name in unready_containers:  # past its probe's start-up allowance
            unready = True
            case.add("probe_failure", 0.55, f"Container {name} runs but fails its readiness probe",
                     {"source": "status", "field": f"{field_base}.ready", "detail": "running, not ready"})
        if running and cstatus in init_statuses and status.get("phase") == "Pending":
            _stuck_init_hypothesis(case, bundle, name, running, now)
    if crashed or probe_killed or unready or bundle.get("job"):
        context = "The program fails"
        found = _log_hypotheses(case, bundle.get("previous_logs") or "", "previous_log", context)
        found += _log_hypotheses(case, bundle.get("logs") or "", "log", context)
        if probe_killed or unready:
            # The probe fails because the process had already failed: out of memory, or waiting
            # on a dependency that is down. That cause, not the probe, is what to act on.
            for _confidence, failure_class, cause, evidence in found:
                if failure_class in _UNDERLYING:
                    case.add(failure_class, 0.9, f"{cause} (the health checks fail because of it)", *evidence)
    # Scheduling and eviction.
    from agents.rca.placement import eviction_hypothesis, scheduling_hypothesis

    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            scheduling_hypothesis(case, condition.get("message") or "", {"source": "status", "field": "status.conditions[PodScheduled]", "detail": (condition.get("message") or condition.get("reason") or "")[:300]})
    if status.get("reason") == "Evicted":
        message = status.get("message") or ""
        eviction_hypothesis(case, message, {"source": "status", "field": "status.reason", "detail": f"Evicted: {message}"[:300]}, 0.9)


def _memory_limit(container_spec: Mapping[str, Any] | None) -> str | None:
    return (((container_spec or {}).get("resources") or {}).get("limits") or {}).get("memory")


def _stuck_init_hypothesis(case: Case, bundle: Mapping[str, Any], name: str, running: Mapping[str, Any], now: datetime) -> None:
    """An init container that keeps running while the pod waits: what its log says it waits for."""
    try:
        started = datetime.fromisoformat(str(running.get("startedAt") or "").replace("Z", "+00:00"))
    except ValueError:
        return
    if (now - started).total_seconds() < _INIT_STUCK_S:
        return
    text = bundle.get("logs") or ""
    found = _log_hypotheses(case, text, "log", f"Init container {name} cannot finish")
    waits = _WAITING_FOR.findall(text)
    if len(waits) >= 3 and not any(h[1] == "dependency_failure" for h in found):
        line = text.count("\n", 0, text.find(waits[-1])) + 1
        case.add("dependency_failure", 0.75,
                 f"Init container {name} has been waiting for a dependency for {int((now - started).total_seconds() // 60)} min: {waits[-1].strip()[:200]}",
                 {"source": "log", "line": line, "detail": waits[-1].strip()[:300], "count": len(waits)})


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
            # A failed Job says that its pods failed, not why: that is the pods' to tell.
            case.add("unknown", 0.25, f"{finding.message}; nothing in the bundle says why its pods failed",
                     {"source": "job", "field": "status.conditions[Failed]", "detail": finding.message})

