"""The failure classes: the one list of what each means, the evidence that supports it, and the
action it implies. The RCA's rules and the LLM's prompt use it, reports take their first
recommended action from it, playbook conditions test it (`rca.failure_class`), and the README's
table is rendered from it (`manage.py eval --vocabulary`; a test checks the README holds it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FailureClass:
    name: str
    meaning: str  # one line, also what the LLM is told the class means
    evidence: str  # what supports it in a bundle
    action: str  # what it implies; {workload} and {node} are filled in a report
    playbook: str | None = None  # the built-in playbook a report recommends, if one fits


VOCABULARY: tuple[FailureClass, ...] = (
    FailureClass(
        "oom_killed",
        "the container is killed for exceeding its memory limit, or its runtime runs out of memory",
        "a termination with reason OOMKilled (now, or the last restart of a running container); "
        "a runtime's out-of-memory error in the log (Java heap space, JavaScript heap out of memory, MemoryError)",
        "Raise the container's memory limit (the oom_kill_remediation playbook proposes a bounded increase), then look for the leak",
        "oom_kill_remediation",
    ),
    FailureClass(
        "app_crash",
        "the program fails on an error of its own (a bug, an unhandled exception, a panic)",
        "an exception, traceback or panic in the (previous) log; an exit by a signal of its own making "
        "(SIGSEGV 139, SIGABRT 134, SIGILL, SIGFPE). A bare exit code 1 is not enough",
        "Read the error in the previous container's log; restart if it is transient, roll back if a recent change introduced it",
        "crash_loop_remediation",
    ),
    FailureClass(
        "config_error",
        "the workload is configured wrong: a missing env var, ConfigMap, Secret, key or file; bad command or arguments; "
        "an image for another CPU architecture; placement rules or volume claims nothing can satisfy",
        "CreateContainerConfigError; RunContainerError naming a missing executable; 'secret/configmap not found' events; "
        "'exec format error'; a log naming a missing variable or setting; FailedScheduling on node selectors, "
        "affinity or unbound PersistentVolumeClaims; a quota that requires requests/limits the template lacks",
        "Create or fix the missing configuration (env var, ConfigMap, Secret, file, command, image platform or placement rule) {workload} refers to",
    ),
    FailureClass(
        "dependency_failure",
        "a database, service or name it needs is unreachable or does not resolve",
        "connection refused / timed out, DNS failures (no such host, Name does not resolve, host not found in upstream), "
        "database driver errors in the log - including in the log of a container its probes kill or keep unready, "
        "and of an init container still waiting for something",
        "Check the dependency named in the log: is it running, is its Service/DNS name right, does a NetworkPolicy block it; "
        "restarting {workload} will not fix it",
    ),
    FailureClass(
        "image_pull_error",
        "the image cannot be pulled (wrong name or tag, no credentials, a registry refusing or rate-limiting)",
        "a container waiting in ImagePullBackOff/ErrImagePull/InvalidImageName; Failed pull events while no image is present",
        "Fix the image name, tag or pull secret of {workload}, or wait out a registry rate limit (authenticate to raise it)",
        "deployment_rollback",
    ),
    FailureClass(
        "resource_exhaustion",
        "the cluster or namespace has no room: unschedulable for lack of CPU/memory/pods, a quota used up, "
        "an autoscaler at its maximum, a disk full, a pod over its own storage limit",
        "FailedScheduling 'Insufficient cpu/memory'; FailedCreate 'exceeded quota'; an HPA limited at maxReplicas; "
        "No space left on device in the log; an eviction for exceeding the pod's own limit",
        "Add capacity (nodes, quota, autoscaler maximum) or lower {workload}'s requests",
        "scale_up_on_load",
    ),
    FailureClass(
        "node_failure",
        "the node is NotReady, unreachable, or under memory/disk/PID pressure (and evicts pods to recover)",
        "a Node whose Ready condition is False/Unknown or with a *Pressure condition; NodeNotReady events while it is not Ready; "
        "an eviction because 'the node was low on resource'",
        "Cordon and drain {node}, then repair or replace it (free its disk, find what eats its memory)",
        "node_not_ready_remediation",
    ),
    FailureClass(
        "probe_failure",
        "liveness/readiness probes fail while the process runs, and nothing shows the process itself has failed",
        "a liveness kill (exit 137/143, reason Error, with a liveness probe); a running container unready past its probe's "
        "start-up allowance; Unhealthy events while it is still unready - with no OOM, dependency or configuration "
        "error in its log",
        "Check the probe's endpoint, port, timeouts and initial delay against what the process serves and how long it takes to start",
    ),
    FailureClass(
        "permission_error",
        "an action is denied: RBAC refuses an API call, or the filesystem refuses the process",
        "'forbidden: User system:serviceaccount:... cannot list/get/...' in a log or event; Permission denied, "
        "Operation not permitted or Read-only file system in the log",
        "Grant the ServiceAccount the Role it needs, or fix file ownership and writability against the pod's securityContext",
    ),
    FailureClass(
        "bad_rollout",
        "the newest revision fails where the previous one worked",
        "a failing pod of the newest ReplicaSet while an older revision still serves (or until recently served); "
        "the deployment's change-cause names the change",
        "Roll back {workload} to the previous revision, then fix the new one",
        "deployment_rollback",
    ),
    FailureClass(
        "unknown",
        "the evidence does not say",
        "a failure (an exit code, a failed Job, a back-off) with no log line, event or state that names a cause",
        "Inspect {workload}'s events and logs; nothing in the bundle names a cause, so do not act on a guess",
    ),
)

BY_NAME = {entry.name: entry for entry in VOCABULARY}


def vocabulary_markdown() -> str:
    """The README's table of failure classes."""
    lines = ["| Class | Meaning | Evidence that supports it | Action it implies |", "| --- | --- | --- | --- |"]
    for entry in VOCABULARY:
        action = entry.action.format(workload="the workload", node="the node")
        if entry.playbook:
            action += f" (playbook `{entry.playbook}`)"
        lines.append(f"| `{entry.name}` | {entry.meaning} | {entry.evidence} | {action} |")
    return "\n".join(lines)
