"""Detectors on JSON shaped as the API server returns it (kubelet- and controller-written status)."""

from __future__ import annotations

import copy
import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from k8s.detectors import FINDING_TYPES, Finding, detect, primary_type, split_list
from tests.conftest import ROOT

NOW = datetime(2026, 11, 23, 15, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def deployment(name: str = "web", ns: str = "shop", replicas: int = 3, available: int = 3, age: float = 86400) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": 2,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": available,
        "conditions": [
            {"type": "Available", "status": "True" if available else "False",
             "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
             "lastUpdateTime": ts(600), "lastTransitionTime": ts(600)},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "lastUpdateTime": ts(600), "lastTransitionTime": ts(age)},
        ],
    }
    if available:
        status["availableReplicas"] = available
    else:
        status["unavailableReplicas"] = replicas
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-deploy-{name}", "generation": 2,
                     "creationTimestamp": ts(age), "annotations": {"deployment.kubernetes.io/revision": "2"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": name, "image": f"{name}:1"}]}},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}},
        "status": status,
    }


def replicaset(deploy: str = "web", template_hash: str = "7d9f8b6c5d", ns: str = "shop", revision: int = 2, ready: int = 3,
               replicas: int = 3, age: float = 86400) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": f"{deploy}-{template_hash}", "namespace": ns, "uid": f"uid-rs-{template_hash}",
                     "creationTimestamp": ts(age),
                     "labels": {"app": deploy, "pod-template-hash": template_hash},
                     "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deploy,
                                          "uid": f"uid-deploy-{deploy}", "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": deploy, "pod-template-hash": template_hash}}},
        "status": {"replicas": replicas, "readyReplicas": ready, "availableReplicas": ready, "fullyLabeledReplicas": replicas},
    }


def pod(name: str = "web-7d9f8b6c5d-x2k4p", ns: str = "shop", owner: tuple[str, str] | None = ("ReplicaSet", "web-7d9f8b6c5d"),
        container: dict[str, Any] | None = None, phase: str = "Running", spec_extra: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None, **status_extra: Any) -> dict[str, Any]:
    """A Running, Ready pod unless `container` (a containerStatus) says otherwise."""
    cstatus = container or {
        "name": "app", "ready": True, "started": True, "restartCount": 0, "image": "web:1",
        "imageID": "docker.io/library/web@sha256:abc", "containerID": "containerd://abc",
        "state": {"running": {"startedAt": ts(3600)}}, "lastState": {},
    }
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{name}", "creationTimestamp": ts(3600),
                            "labels": labels if labels is not None else {"app": "web", "pod-template-hash": "7d9f8b6c5d"}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1" if owner[0] != "Job" else "batch/v1", "kind": owner[0],
                                    "name": owner[1], "uid": "uid-owner", "controller": True, "blockOwnerDeletion": True}]
    ready = "True" if cstatus.get("ready") else "False"
    spec = {"nodeName": "node-a", "restartPolicy": "Always",
            "containers": [{"name": "app", "image": "web:1",
                            "resources": {"limits": {"memory": "256Mi", "cpu": "500m"}, "requests": {"memory": "128Mi"}}}]}
    spec.update(spec_extra or {})
    status: dict[str, Any] = {
        "phase": phase, "hostIP": "10.0.0.5", "podIP": "10.244.1.7", "qosClass": "Burstable", "startTime": ts(3600),
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": ts(3600)},
            {"type": "Initialized", "status": "True", "lastTransitionTime": ts(3600)},
            {"type": "Ready", "status": ready, "lastTransitionTime": ts(60)},
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": ts(60)},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts(3600)},
        ],
        "containerStatuses": [cstatus],
    }
    status.update(status_extra)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def crashing(last_reason: str = "Error", exit_code: int = 1, restarts: int = 6, finished_ago: float = 30) -> dict[str, Any]:
    return {
        "name": "app", "ready": False, "started": False, "restartCount": restarts, "image": "web:1",
        "imageID": "docker.io/library/web@sha256:abc", "containerID": "containerd://def",
        "state": {"waiting": {"reason": "CrashLoopBackOff",
                              "message": "back-off 2m40s restarting failed container=app pod=web-7d9f8b6c5d-x2k4p_shop(uid)"}},
        "lastState": {"terminated": {"exitCode": exit_code, "reason": last_reason, "startedAt": ts(finished_ago + 5),
                                     "finishedAt": ts(finished_ago), "containerID": "containerd://cde"}},
    }


def node(name: str = "node-a", ready: str = "True") -> dict[str, Any]:
    conditions = [
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
        {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
        {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID"},
        {"type": "Ready", "status": ready,
         "reason": "KubeletReady" if ready == "True" else "NodeStatusUnknown",
         "message": "kubelet is posting ready status" if ready == "True" else "Kubelet stopped posting node status.",
         "lastHeartbeatTime": ts(20), "lastTransitionTime": ts(300)},
    ]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"podCIDR": "10.244.1.0/24"}, "status": {"conditions": conditions, "nodeInfo": {"kubeletVersion": "v1.32.0"}}}


def run(pods=(), nodes=(), deployments=(), replicasets=(), hpas=(), jobs=()) -> list[Finding]:  # type: ignore[no-untyped-def]
    return detect(list(pods), list(nodes), list(deployments), list(replicasets), list(hpas), list(jobs), now=NOW)


def types(findings: list[Finding]) -> list[str]:
    return sorted(f.type for f in findings)


# --- healthy clusters yield nothing -----------------------------------------------------------


def test_it_finds_nothing_in_a_healthy_cluster() -> None:
    completed_job_pod = pod(
        "migrate-abc12", owner=("Job", "migrate"), phase="Succeeded", labels={"job-name": "migrate"},
        container={"name": "app", "ready": False, "started": False, "restartCount": 0, "image": "m:1",
                   "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": ts(100), "finishedAt": ts(90)}},
                   "lastState": {}},
    )
    old_restarts = pod(container={
        "name": "app", "ready": True, "started": True, "restartCount": 12, "image": "web:1",
        "state": {"running": {"startedAt": ts(86400)}},
        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": ts(90000), "finishedAt": ts(86400)}},
    })
    complete_job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", "namespace": "shop"},
                    "spec": {"backoffLimit": 6},
                    "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"minReplicas": 2, "maxReplicas": 10, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}},
           "status": {"currentReplicas": 3, "desiredReplicas": 3,
                      "conditions": [{"type": "ScalingLimited", "status": "False", "reason": "DesiredWithinRange"}]}}
    assert run(pods=[pod(), completed_job_pod, old_restarts], nodes=[node()], deployments=[deployment()],
               replicasets=[replicaset()], hpas=[hpa], jobs=[complete_job]) == []


def test_a_pod_still_inside_its_readiness_allowance_is_not_a_failure() -> None:
    starting = pod(
        container={"name": "app", "ready": False, "started": True, "restartCount": 0, "image": "web:1",
                   "state": {"running": {"startedAt": ts(5)}}, "lastState": {}},
        spec_extra={"containers": [{"name": "app", "image": "web:1", "readinessProbe": {
            "httpGet": {"path": "/ready", "port": 8080}, "initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 3}}]},
    )
    assert run(pods=[starting]) == []


# --- each finding type -------------------------------------------------------------------------


def test_it_reports_a_crash_loop_owned_by_the_deployment_with_the_exit_code_explained() -> None:
    findings = run(pods=[pod(container=crashing(exit_code=1))], replicasets=[replicaset()], deployments=[deployment(available=2)])
    assert len(findings) == 1
    finding = findings[0]
    assert (finding.type, finding.severity, finding.kind, finding.pod) == ("crash_loop", "critical", "Pod", "web-7d9f8b6c5d-x2k4p")
    assert (finding.owner_kind, finding.owner_name, finding.workload_key()) == ("Deployment", "web", "Deployment/shop/web")
    assert finding.evidence["restart_count"] == 6
    assert finding.evidence["last_termination"]["exit_code"] == 1
    assert "general error" in finding.evidence["last_termination"]["exit_code_explained"]


def test_an_oom_inside_a_crash_loop_is_an_oom() -> None:
    findings = run(pods=[pod(container=crashing(last_reason="OOMKilled", exit_code=137))], replicasets=[replicaset()])
    assert types(findings) == ["oom_killed"]
    assert findings[0].evidence["memory_limit"] == "256Mi"
    assert "SIGKILL" in findings[0].evidence["last_termination"]["exit_code_explained"]


def test_a_running_container_that_keeps_being_oom_killed_is_an_oom_but_one_old_oom_is_not() -> None:
    def oomed(restarts: int, ago: float) -> dict[str, Any]:
        return pod(container={
            "name": "app", "ready": True, "started": True, "restartCount": restarts, "image": "web:1",
            "state": {"running": {"startedAt": ts(ago - 1)}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": ts(ago)}},
        })
    findings = run(pods=[oomed(8, 60)])
    assert types(findings) == ["oom_killed"] and findings[0].evidence["restarts_per_hour"] == 8.0
    assert run(pods=[oomed(1, 60)]) == []  # once, and running again
    assert run(pods=[oomed(8, 1800)]) == []  # no OOM for 4x its old rhythm: fixed


def test_an_image_pull_failure_is_reported_with_the_image() -> None:
    container = {"name": "app", "ready": False, "started": False, "restartCount": 0, "image": "web:does-not-exist",
                 "state": {"waiting": {"reason": "ImagePullBackOff",
                                       "message": 'Back-off pulling image "web:does-not-exist"'}}, "lastState": {}}
    findings = run(pods=[pod(container=container, phase="Pending")], replicasets=[replicaset()])
    assert types(findings) == ["image_pull_failure"]
    assert findings[0].evidence["image"] == "web:does-not-exist"
    assert "web:does-not-exist" in findings[0].message


def test_an_unschedulable_pod_says_why() -> None:
    pending = pod(phase="Pending", container={"name": "app", "ready": False, "restartCount": 0, "image": "web:1",
                                              "state": {"waiting": {"reason": "ContainerCreating"}}})
    pending["status"]["conditions"] = [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": ts(120),
        "message": "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
    }]
    del pending["status"]["containerStatuses"]
    findings = run(pods=[pending], replicasets=[replicaset()])
    assert types(findings) == ["unschedulable"]
    assert "Insufficient memory" in findings[0].message


def test_a_readiness_probe_failing_past_its_allowance_is_a_probe_failure() -> None:
    unready = pod(
        container={"name": "app", "ready": False, "started": True, "restartCount": 0, "image": "web:1",
                   "state": {"running": {"startedAt": ts(600)}}, "lastState": {}},
        spec_extra={"containers": [{"name": "app", "image": "web:1", "readinessProbe": {
            "httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 10, "failureThreshold": 3}}]},
    )
    findings = run(pods=[unready], replicasets=[replicaset()])
    assert types(findings) == ["probe_failure"]
    assert findings[0].evidence["probe"] == "readiness"
    assert findings[0].evidence["running_for_s"] >= 600
    assert 59 <= findings[0].evidence["unready_for_s"] <= 61  # since the Ready condition turned False
    assert "unready for 6" in findings[0].message


def test_restarts_by_the_liveness_probe_are_a_probe_failure() -> None:
    killed = pod(
        container={"name": "app", "ready": True, "started": True, "restartCount": 6, "image": "web:1",
                   "state": {"running": {"startedAt": ts(30)}},
                   "lastState": {"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": ts(31)}}},
        spec_extra={"containers": [{"name": "app", "image": "web:1", "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}}}]},
    )
    assert types(run(pods=[killed], replicasets=[replicaset()])) == ["probe_failure"]


LIVENESS = {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10, "failureThreshold": 3}


@pytest.mark.parametrize("exit_code", [137, 143])
def test_a_container_killed_by_its_liveness_probe_and_backing_off_is_a_probe_failure_not_a_crash_loop(exit_code: int) -> None:
    looping = pod(container=crashing(exit_code=exit_code),
                  spec_extra={"containers": [{"name": "app", "image": "web:1", "livenessProbe": LIVENESS}]})
    findings = run(pods=[looping], replicasets=[replicaset()])
    assert types(findings) == ["probe_failure"]
    assert findings[0].severity == "critical"  # backing off: nothing serves
    assert findings[0].evidence["probe"] == "liveness"
    assert findings[0].evidence["waiting_reason"] == "CrashLoopBackOff"
    assert findings[0].evidence["last_termination"]["exit_code"] == exit_code


def test_a_kill_by_the_kernel_or_a_crash_of_a_probed_container_stays_what_it_is() -> None:
    spec = {"containers": [{"name": "app", "image": "web:1", "livenessProbe": LIVENESS,
                            "resources": {"limits": {"memory": "256Mi"}}}]}
    oom = pod(container=crashing(last_reason="OOMKilled", exit_code=137), spec_extra=spec)
    crash = pod("web-7d9f8b6c5d-b", container=crashing(exit_code=1), spec_extra=spec)
    assert sorted(types(run(pods=[oom, crash], replicasets=[replicaset()]))) == ["crash_loop", "oom_killed"]
    # Without a liveness probe nothing but the process (or a person) sent that SIGKILL.
    unprobed = pod(container=crashing(exit_code=137))
    assert types(run(pods=[unprobed], replicasets=[replicaset()])) == ["crash_loop"]


def test_an_evicted_pod_is_reported_once() -> None:
    evicted = pod(phase="Failed", reason="Evicted",
                  message="The node was low on resource: memory. Threshold quantity: 100Mi, available: 51000Ki.",
                  container={"name": "app", "ready": False, "restartCount": 0, "image": "web:1",
                             "state": {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown"}}})
    findings = run(pods=[evicted], replicasets=[replicaset()])
    assert types(findings) == ["evicted"]
    assert "low on resource: memory" in findings[0].message


def test_a_container_restarting_often_but_running_now_is_a_high_restart_rate() -> None:
    def flappy(last_ago: float) -> dict[str, Any]:
        return pod(container={
            "name": "app", "ready": True, "started": True, "restartCount": 9, "image": "web:1",
            "state": {"running": {"startedAt": ts(last_ago - 1)}},
            "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "finishedAt": ts(last_ago)}},
        })
    findings = run(pods=[flappy(300)], replicasets=[replicaset()])
    assert types(findings) == ["high_restart_rate"]
    assert findings[0].evidence["restarts_per_hour"] == 9.0
    # Every ~400 s for an hour, then quiet for 1000 s: it was fixed.
    assert run(pods=[flappy(1000)], replicasets=[replicaset()]) == []


def test_a_not_ready_node_is_critical_and_owned_by_itself() -> None:
    findings = run(nodes=[node("node-a"), node("node-b", ready="Unknown")])
    assert len(findings) == 1
    assert (findings[0].type, findings[0].severity, findings[0].workload_key()) == ("not_ready_node", "critical", "Node//node-b")
    assert findings[0].evidence["ready"] == "Unknown"


def failing_deployment(unavailable_for: float | None = None) -> dict[str, Any]:
    """Nothing available; the Available condition turned False `unavailable_for` seconds ago."""
    deploy = deployment(available=0, age=3 * 86400)
    if unavailable_for is not None:
        for cond in deploy["status"]["conditions"]:
            if cond["type"] == "Available":
                cond["lastTransitionTime"] = ts(unavailable_for)
    return deploy


def test_a_fresh_rollout_failing_after_a_revision_that_worked_is_a_bad_rollout() -> None:
    # Recreate-like: the old ReplicaSet is scaled to 0 at once; the deployment was available
    # until this rollout (10 minutes ago) began.
    new_rs = replicaset(template_hash="5c8f9d7b44", revision=3, ready=0, age=600)
    old_rs = replicaset(template_hash="7d9f8b6c5d", revision=2, ready=0, replicas=0, age=3 * 86400)
    findings = run(deployments=[failing_deployment(unavailable_for=590)], replicasets=[new_rs, old_rs])
    assert types(findings) == ["replication_failure"]
    evidence = findings[0].evidence
    assert evidence["bad_rollout"] is True
    assert evidence["newest_replicaset"] == "web-5c8f9d7b44"
    assert evidence["newest_revision_age_s"] == 600
    assert evidence["older_revisions"][0]["revision"] == 2
    assert "revision 3" in findings[0].message and "revision 2 worked" in findings[0].message
    # RollingUpdate: the old revision still has ready pods while the new one fails.
    serving = replicaset(template_hash="7d9f8b6c5d", revision=2, ready=1, replicas=1, age=3 * 86400)
    assert run(deployments=[failing_deployment(unavailable_for=3 * 86400)], replicasets=[new_rs, serving])[0].evidence["bad_rollout"] is True


def test_an_old_rollout_that_fails_now_is_not_a_bad_rollout() -> None:
    # Revision 3 rolled out 3 days ago and ran; its pods fail their readiness probe since 5 minutes:
    # the revisions before it say nothing about this failure, and a rollback would not fix it.
    new_rs = replicaset(template_hash="5c8f9d7b44", revision=3, ready=0, age=3 * 86400)
    old_rs = replicaset(template_hash="7d9f8b6c5d", revision=2, ready=0, replicas=0, age=4 * 86400)
    failing = pod(name="web-5c8f9d7b44-abcde", owner=("ReplicaSet", "web-5c8f9d7b44"),
                  labels={"app": "web", "pod-template-hash": "5c8f9d7b44"},
                  container=crashing())
    findings = run(pods=[failing], deployments=[failing_deployment(unavailable_for=300)], replicasets=[new_rs, old_rs])
    assert types(findings) == ["crash_loop", "replication_failure"]
    rf = next(f for f in findings if f.type == "replication_failure")
    assert rf.evidence["bad_rollout"] is False
    assert rf.evidence["newest_revision_age_s"] == 3 * 86400
    assert "worked" not in rf.message


def test_a_recent_revision_is_no_bad_rollout_when_the_one_before_never_worked_or_fails_too() -> None:
    new_rs = replicaset(template_hash="5c8f9d7b44", revision=3, ready=0, age=600)
    # The deployment was unavailable for a day already, before this rollout: nothing to go back to.
    scaled_down = replicaset(template_hash="7d9f8b6c5d", revision=2, ready=0, replicas=0, age=86400)
    assert run(deployments=[failing_deployment(unavailable_for=86400)],
               replicasets=[new_rs, scaled_down])[0].evidence["bad_rollout"] is False
    # The old revision's pods are failing as well: the cause is not the new template.
    also_failing = replicaset(template_hash="7d9f8b6c5d", revision=2, ready=0, replicas=2, age=86400)
    assert run(deployments=[failing_deployment(unavailable_for=590)],
               replicasets=[new_rs, also_failing])[0].evidence["bad_rollout"] is False
    # The newest revision has no pods at all (quota, admission): no failing pods of it to blame.
    empty = replicaset(template_hash="5c8f9d7b44", revision=3, ready=0, replicas=0, age=600)
    assert run(deployments=[failing_deployment(unavailable_for=590)],
               replicasets=[empty, scaled_down])[0].evidence["bad_rollout"] is False


def test_a_deployment_with_none_available_is_a_replication_failure() -> None:
    # First revision failing: nothing older to roll back to.
    only = run(deployments=[deployment(available=0)], replicasets=[replicaset(revision=1, ready=0, age=600)])
    assert types(only) == ["replication_failure"]
    assert only[0].evidence["bad_rollout"] is False
    # Scaled to zero, or just created: not a failure.
    assert run(deployments=[deployment(replicas=0, available=0)]) == []
    assert run(deployments=[deployment(available=0, age=10)]) == []


def test_findings_carry_the_owning_workloads_labels() -> None:
    deploy = failing_deployment()
    deploy["metadata"]["labels"] = {"app": "web", "team": "payments"}
    failing = pod(container=crashing(), labels={"app": "web", "pod-template-hash": "7d9f8b6c5d", "version": "1"})
    findings = run(pods=[failing], deployments=[deploy], replicasets=[replicaset(ready=0)],
                   nodes=[node("node-b", ready="False")])
    by_type = {f.type: f for f in findings}
    # The Deployment is at hand: its labels, for its own finding and for its pods'.
    assert by_type["replication_failure"].evidence["labels"] == {"app": "web", "team": "payments"}
    assert by_type["crash_loop"].evidence["labels"] == {"app": "web", "team": "payments"}
    assert by_type["not_ready_node"].evidence["labels"] == {"kubernetes.io/hostname": "node-b"}
    # Without it (a streaming poll holds no Deployments when it reads pods): the pod's labels,
    # less the per-revision hash that differs between rollouts.
    alone = run(pods=[failing], replicasets=[replicaset(ready=0)])
    assert alone[0].evidence["labels"] == {"app": "web", "version": "1"}


def test_an_hpa_at_its_maximum_that_wants_more_belongs_to_its_target() -> None:
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "web-hpa", "namespace": "shop"},
           "spec": {"minReplicas": 2, "maxReplicas": 10,
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}},
           "status": {"currentReplicas": 10, "desiredReplicas": 10, "conditions": [
               {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"},
               {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"},
               {"type": "ScalingLimited", "status": "True", "reason": "TooManyReplicas",
                "message": "the desired replica count is more than the maximum replica count"}]}}
    findings = run(hpas=[hpa])
    assert types(findings) == ["hpa_maxed"]
    assert findings[0].workload_key() == "Deployment/shop/web"
    calm = copy.deepcopy(hpa)
    calm["status"]["conditions"][2] = {"type": "ScalingLimited", "status": "False", "reason": "DesiredWithinRange"}
    assert run(hpas=[calm]) == []


def test_a_failed_job_of_a_cronjob_belongs_to_the_cronjob() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "nightly-29400000", "namespace": "ops",
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "u", "controller": True}]},
           "spec": {"backoffLimit": 2},
           "status": {"failed": 3, "conditions": [
               {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
               {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit", "lastTransitionTime": ts(60)}]}}
    failed_pod = pod("nightly-29400000-abcde", ns="ops", owner=("Job", "nightly-29400000"), phase="Failed",
                     labels={"job-name": "nightly-29400000"}, spec_extra={"restartPolicy": "Never"},
                     container={"name": "app", "ready": False, "restartCount": 0, "image": "n:1",
                                "state": {"terminated": {"exitCode": 1, "reason": "Error"}}})
    findings = run(pods=[failed_pod], jobs=[job])
    assert types(findings) == ["failed_job"]
    assert findings[0].workload_key() == "CronJob/ops/nightly"
    assert findings[0].evidence["reason"] == "BackoffLimitExceeded"


# --- owner resolution ----------------------------------------------------------------------------


def test_owners_resolve_to_the_controller_an_operator_knows() -> None:
    def crash(owner: tuple[str, str] | None, name: str = "x") -> dict[str, Any]:
        return pod(name, owner=owner, container=crashing(), labels={})

    statefulset = run(pods=[crash(("StatefulSet", "db"), "db-0")])
    daemonset = run(pods=[crash(("DaemonSet", "agent"), "agent-7xk2p")])
    bare = run(pods=[crash(None, "debug")])
    assert [f.workload_key() for f in statefulset + daemonset + bare] == [
        "StatefulSet/shop/db", "DaemonSet/shop/agent", "Pod/shop/debug"]
    # A ReplicaSet missing from the dump still resolves through the pod-template-hash label.
    orphan = pod(container=crashing())
    assert run(pods=[orphan])[0].workload_key() == "Deployment/shop/web"


def test_replicas_of_one_deployment_share_one_workload_key() -> None:
    pods = [pod(f"web-7d9f8b6c5d-{s}", container=crashing()) for s in ("aaaaa", "bbbbb", "ccccc")]
    findings = run(pods=pods, replicasets=[replicaset()])
    assert {f.workload_key() for f in findings} == {"Deployment/shop/web"}
    assert sorted(f.pod for f in findings) == ["web-7d9f8b6c5d-aaaaa", "web-7d9f8b6c5d-bbbbb", "web-7d9f8b6c5d-ccccc"]


def test_primary_type_prefers_the_most_specific() -> None:
    assert primary_type(["crash_loop", "oom_killed", "replication_failure"]) == "oom_killed"
    assert primary_type(["replication_failure", "crash_loop", "probe_failure"]) == "crash_loop"
    assert primary_type(["hpa_maxed", "replication_failure"]) == "replication_failure"
    assert set(FINDING_TYPES) >= {"crash_loop", "cluster_unreachable", "hpa_maxed"}


def test_split_list_sorts_a_kubectl_dump_by_kind() -> None:
    buckets = split_list([pod(), node(), deployment(), replicaset(), {"kind": "Service"}])
    assert {k: len(v) for k, v in buckets.items()} == {
        "pods": 1, "nodes": 1, "deployments": 1, "replicasets": 1, "hpas": 0, "jobs": 0}


# --- manage.py detect --------------------------------------------------------------------------


def _detect_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", "detect", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_detect_prints_one_json_line_per_finding_for_a_kubectl_dump(tmp_path: Path) -> None:
    recent = dict(crashing(), lastState={"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2099-01-01T00:00:00Z"}})
    dump = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
            "items": [pod(container=recent), pod("web-7d9f8b6c5d-zzzzz"), node("node-b", ready="False"), replicaset(),
                      deployment(), {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}]}
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(dump))
    result = _detect_cli(str(path))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["type"], r["kind"], r["name"], r["owner"]) for r in rows] == [
        ("not_ready_node", "Node", "node-b", "Node//node-b"),
        ("crash_loop", "Pod", "web-7d9f8b6c5d-x2k4p", "Deployment/shop/web"),
    ]
    assert {"type", "severity", "kind", "namespace", "name", "message", "evidence"} <= set(rows[0])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "is not JSON"),
        ('{"kind": "Pod", "metadata": {}}', "is not a Kubernetes List"),
        ('{"kind": "List", "items": [1]}', "items[0] is not an object"),
        ('{"kind": "List", "items": [{"kind": "Service"}]}', "holds no pods, nodes"),
    ],
)
def test_detect_refuses_a_bad_dump_with_a_clear_message(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    out = io.StringIO()
    with pytest.raises(CommandError, match=re.escape(expected)):
        call_command("detect", str(path), stdout=out, stderr=io.StringIO())
    assert out.getvalue() == ""


def test_detect_names_a_missing_file_and_exits_non_zero(tmp_path: Path) -> None:
    result = _detect_cli(str(tmp_path / "nope.json"))
    assert result.returncode == 1 and "cannot read" in result.stderr and "nope.json" in result.stderr
    assert "Traceback" not in result.stderr
