"""Findings on nodes, Deployments (replication failures, bad rollouts), HPAs and Jobs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from k8s.detectors.findings import CRITICAL, WARNING, Finding
from k8s.detectors.owners import OwnerIndex
from k8s.detectors.raw import age_s, condition, controller_ref, meta, ns_name

# A deployment younger than this has not had a chance to become available yet.
DEPLOYMENT_GRACE_S = 60
# A failing newest revision created within this window, after an older one that worked, is a bad
# rollout (a rollback is the fix); after it, a failure is the running revision's own problem.
# agents/rca (rules) judges rollouts with the same window.
BAD_ROLLOUT_WINDOW_S = 6 * 3600
# A Recreate rollout scales the old ReplicaSet down (and waits for its pods to terminate) before it
# creates the new one, so the deployment may lose availability a little before the new revision.
ROLLOUT_SLACK_S = 600


def detect_node(node: Mapping[str, Any]) -> list[Finding]:
    _, name = ns_name(node)
    ready = condition(node, "Ready")
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
        "labels": dict(meta(node).get("labels") or {}),
    }
    detail = (ready or {}).get("message") or (ready or {}).get("reason") or "no Ready condition"
    return [Finding("not_ready_node", CRITICAL, "Node", "", name, "Node", name,
                    f"Node {name} is not ready (Ready={state}): {detail}", evidence)]


def _revision(obj: Mapping[str, Any]) -> int:
    try:
        return int((meta(obj).get("annotations") or {}).get("deployment.kubernetes.io/revision") or 0)
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
    available = condition(deployment, "Available")
    if available is None:
        # No condition to tell (an old dump): a revision the controller stamped ran before.
        return any(_revision(rs) > 0 for rs in older)
    if available.get("status") == "True":
        return False
    lost_for = age_s(available.get("lastTransitionTime"), now)
    return lost_for is not None and lost_for <= newest_age + ROLLOUT_SLACK_S


def detect_deployment(deployment: Mapping[str, Any], rs_by_owner: Mapping[tuple[str, str], list[Mapping[str, Any]]], now: datetime) -> list[Finding]:
    namespace, name = ns_name(deployment)
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = spec.get("replicas", 1)
    available = int(status.get("availableReplicas") or 0)
    if not desired or available > 0 or spec.get("paused"):
        return []
    age = age_s(meta(deployment).get("creationTimestamp"), now)
    if age is not None and age < DEPLOYMENT_GRACE_S:
        return []
    replicasets = sorted(rs_by_owner.get((namespace, name), []), key=_revision, reverse=True)
    evidence: dict[str, Any] = {
        "desired_replicas": desired,
        "available_replicas": available,
        "ready_replicas": int(status.get("readyReplicas") or 0),
        "updated_replicas": int(status.get("updatedReplicas") or 0),
        "bad_rollout": False,
        "labels": dict(meta(deployment).get("labels") or {}),
    }
    progressing = condition(deployment, "Progressing")
    if progressing:
        evidence["progressing_reason"] = progressing.get("reason") or ""
    if replicasets:
        newest = replicasets[0]
        older = replicasets[1:]
        evidence["newest_replicaset"] = ns_name(newest)[1]
        evidence["newest_revision"] = _revision(newest)
        newest_age = age_s(meta(newest).get("creationTimestamp"), now)
        if newest_age is not None:
            evidence["newest_revision_age_s"] = int(newest_age)
        evidence["older_revisions"] = [
            {"replicaset": ns_name(rs)[1], "revision": _revision(rs),
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


def detect_hpa(hpa: Mapping[str, Any], owners: OwnerIndex | None) -> list[Finding]:
    namespace, name = ns_name(hpa)
    spec = hpa.get("spec") or {}
    status = hpa.get("status") or {}
    maximum = spec.get("maxReplicas")
    current = status.get("currentReplicas") or 0
    if not maximum or current < maximum:
        return []
    limited = condition(hpa, "ScalingLimited")
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
                     "labels": owners.labels_of(owner_kind, namespace, owner_name, meta(hpa).get("labels"))
                     if owners else dict(meta(hpa).get("labels") or {})})]


def detect_job(job: Mapping[str, Any], owners: OwnerIndex) -> list[Finding]:
    failed = condition(job, "Failed")
    if not failed or failed.get("status") != "True":
        return []
    namespace, name = ns_name(job)
    owner_kind, owner_name = owners.owner_of_job(namespace, name)
    status = job.get("status") or {}
    reason = failed.get("reason") or "Failed"
    return [Finding("failed_job", WARNING, "Job", namespace, name, owner_kind, owner_name,
                    f"Job {namespace}/{name} failed: {reason}" + (f" ({failed.get('message')})" if failed.get("message") else ""),
                    {"reason": reason, "condition_message": failed.get("message") or "",
                     "failed_pods": int(status.get("failed") or 0),
                     "backoff_limit": (job.get("spec") or {}).get("backoffLimit"),
                     "since": failed.get("lastTransitionTime"),
                     "labels": dict(meta(job).get("labels") or {})})]


def replicasets_by_deployment(replicasets: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    by_owner: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for rs in replicasets:
        ref = controller_ref(rs)
        if ref and ref.get("kind") == "Deployment":
            by_owner.setdefault((ns_name(rs)[0], ref.get("name") or ""), []).append(rs)
    return by_owner
