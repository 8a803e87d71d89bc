"""Each fault writes the status fields a kubelet or controller writes, and each documented
remediation, done through the Kubernetes API, clears it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from kubernetes import client as k8s

from k8s.sandbox import FaultError, Sandbox


@pytest.fixture
def demo(sandbox: Sandbox) -> Sandbox:
    sandbox.reset("demo")
    return sandbox


@pytest.fixture(scope="module")
def api(sandbox: Sandbox) -> Iterator[k8s.ApiClient]:
    api_client = sandbox.api_client()
    yield api_client
    api_client.close()


def raw(api_client: k8s.ApiClient, path: str) -> Any:
    """GET as raw JSON, the way the watch loop reads the cluster."""
    method, url, headers, _, _ = api_client.param_serialize(
        "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
    response = api_client.call_api(method, url, header_params=headers)
    response.read()
    assert response.status == 200, response.data
    return orjson.loads(response.data)


def pods_of(api_client: k8s.ApiClient, namespace: str, app: str) -> list[dict[str, Any]]:
    return raw(api_client, f"/api/v1/namespaces/{namespace}/pods?labelSelector=app.kubernetes.io%2Fname%3D{app}")["items"]


def container_status(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["status"]["containerStatuses"][0]


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == ctype)


def active(sandbox: Sandbox, target: str) -> list[str]:
    return [f["type"] for f in sandbox.faults() if f["target"] == target]


def test_it_crash_loops_and_a_transient_crash_loop_clears_when_the_pod_is_restarted(demo: Sandbox, api: k8s.ApiClient) -> None:
    pods = pods_of(api, "payments", "ledger")
    [pod] = [p for p in pods if "waiting" in container_status(p)["state"]]  # the demo crashes one pod of two
    cs = container_status(pod)
    assert pod["status"]["phase"] == "Running"
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert "back-off" in cs["state"]["waiting"]["message"]
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    assert cs["ready"] is False and cs["restartCount"] == 4
    assert condition(pod, "Ready")["status"] == "False"
    assert condition(pod, "Ready")["reason"] == "ContainersNotReady"
    demo.tick(2)
    [pod] = [p for p in pods_of(api, "payments", "ledger") if p["metadata"]["name"] == pod["metadata"]["name"]]
    assert container_status(pod)["restartCount"] == 6

    k8s.CoreV1Api(api).delete_namespaced_pod(pod["metadata"]["name"], "payments")
    [replacement] = [p for p in pods_of(api, "payments", "ledger") if p["metadata"]["name"] not in {x["metadata"]["name"] for x in pods}]
    assert replacement["status"]["phase"] == "Running"
    assert container_status(replacement)["ready"] is True
    assert container_status(replacement)["restartCount"] == 0
    assert active(demo, "payments/ledger") == []


def test_it_crash_loops_one_pod_when_the_target_names_it(demo: Sandbox, api: k8s.ApiClient) -> None:
    frontend = sorted(p["metadata"]["name"] for p in pods_of(api, "shop", "frontend"))
    demo.fault("crash_loop", f"shop/{frontend[1]}")
    waiting = {p["metadata"]["name"] for p in pods_of(api, "shop", "frontend") if "waiting" in container_status(p)["state"]}
    assert waiting == {frontend[1]}
    assert active(demo, "shop/frontend") == ["crash_loop"]  # the fault is the deployment's


def test_it_keeps_a_persistent_crash_loop_through_restarts_until_a_rollback(demo: Sandbox, api: k8s.ApiClient) -> None:
    demo.fault("crash_loop", "shop/checkout", transient=False, exit_code=2)
    apps = k8s.AppsV1Api(api)
    for pod in pods_of(api, "shop", "checkout"):
        k8s.CoreV1Api(api).delete_namespaced_pod(pod["metadata"]["name"], "shop")
    pods = pods_of(api, "shop", "checkout")
    assert len(pods) == 2
    assert all(container_status(p)["lastState"]["terminated"]["exitCode"] == 2 for p in pods)
    assert active(demo, "shop/checkout") == ["crash_loop"]
    # Roll back to revision 2's template (what rollback_deployment does).
    rs = next(r for r in apps.list_namespaced_replica_set("shop").items
              if r.metadata.annotations.get("deployment.kubernetes.io/revision") == "2")
    template = k8s.ApiClient().sanitize_for_serialization(rs.spec.template)
    template["metadata"]["labels"].pop("pod-template-hash")
    apps.patch_namespaced_deployment("checkout", "shop", [{"op": "replace", "path": "/spec/template", "value": template}])
    assert all(container_status(p)["ready"] for p in pods_of(api, "shop", "checkout"))
    assert active(demo, "shop/checkout") == []


def test_it_oom_kills_until_the_memory_limit_is_raised_above_the_need(demo: Sandbox, api: k8s.ApiClient) -> None:
    [pod] = pods_of(api, "data", "report-builder")
    cs = container_status(pod)
    assert cs["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert cs["lastState"]["terminated"]["exitCode"] == 137
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["memory"] == "256Mi"
    log = k8s.CoreV1Api(api).read_namespaced_pod_log(pod["metadata"]["name"], "data", previous=True)
    assert "java.lang.OutOfMemoryError: Java heap space" in log

    apps = k8s.AppsV1Api(api)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "report-builder", "resources": {"limits": {"memory": "320Mi"}}}]}}}}
    apps.patch_namespaced_deployment("report-builder", "data", patch)  # strategic merge: still below the 384Mi need
    [pod] = pods_of(api, "data", "report-builder")
    assert pod["spec"]["containers"][0]["resources"]["limits"]["memory"] == "320Mi"
    assert container_status(pod)["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert pod["spec"]["containers"][0]["resources"]["requests"]["memory"] == "128Mi"  # merged, not replaced

    patch["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "512Mi"
    apps.patch_namespaced_deployment("report-builder", "data", patch)
    [pod] = pods_of(api, "data", "report-builder")
    assert container_status(pod)["ready"] is True
    assert active(demo, "data/report-builder") == []
    deploy = raw(api, "/apis/apps/v1/namespaces/data/deployments/report-builder")
    assert deploy["status"]["availableReplicas"] == 1
    assert condition(deploy, "Available")["status"] == "True"


def test_it_fails_image_pulls_with_the_kubelet_reasons(demo: Sandbox, api: k8s.ApiClient) -> None:
    demo.fault("image_pull_failure", "shop/frontend")
    for pod in pods_of(api, "shop", "frontend"):
        k8s.CoreV1Api(api).delete_namespaced_pod(pod["metadata"]["name"], "shop")
    pod = pods_of(api, "shop", "frontend")[0]
    assert pod["status"]["phase"] == "Pending"
    waiting = container_status(pod)["state"]["waiting"]
    assert waiting["reason"] in ("ImagePullBackOff", "ErrImagePull")
    assert "registry.example.com/shop/frontend:2.4.1" in waiting["message"]
    demo.tick()
    reasons = {container_status(p)["state"]["waiting"]["reason"] for p in pods_of(api, "shop", "frontend")}
    assert reasons <= {"ImagePullBackOff", "ErrImagePull"}
    with pytest.raises(k8s.ApiException) as refused:
        k8s.CoreV1Api(api).read_namespaced_pod_log(pod["metadata"]["name"], "shop")
    assert refused.value.status == 400
    assert "is waiting to start: trying and failing to pull image" in refused.value.body
    demo.clear("shop/frontend")
    assert all(container_status(p)["ready"] for p in pods_of(api, "shop", "frontend"))


def test_it_leaves_pods_pending_and_unschedulable(demo: Sandbox, api: k8s.ApiClient) -> None:
    demo.fault("unschedulable", "shop/cart")
    pods = pods_of(api, "shop", "cart")
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Pending"
        assert "nodeName" not in pod["spec"]
        scheduled = condition(pod, "PodScheduled")
        assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
        assert scheduled["message"].startswith("0/4 nodes are available: 4 Insufficient memory.")
    events = raw(api, "/api/v1/namespaces/shop/events?fieldSelector=reason%3DFailedScheduling")["items"]
    assert events and events[0]["type"] == "Warning"
    # A template change (here a lower request) clears it.
    k8s.AppsV1Api(api).patch_namespaced_deployment(
        "cart", "shop", {"spec": {"template": {"spec": {"containers": [{"name": "cart", "resources": {"requests": {"memory": "64Mi"}}}]}}}})
    assert all(p["status"]["phase"] == "Running" for p in pods_of(api, "shop", "cart"))


def test_it_marks_a_node_not_ready_and_only_fault_clear_brings_it_back(demo: Sandbox, api: k8s.ApiClient) -> None:
    node = raw(api, "/api/v1/nodes/node-4")
    ready = condition(node, "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
    assert {(t["key"], t["effect"]) for t in node["spec"]["taints"]} == {
        ("node.kubernetes.io/unreachable", "NoSchedule"), ("node.kubernetes.io/unreachable", "NoExecute")}
    on_node = [p for p in raw(api, "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-4")["items"]]
    assert on_node and all(condition(p, "Ready")["status"] == "False" for p in on_node)
    core = k8s.CoreV1Api(api)
    core.patch_node("node-4", {"spec": {"unschedulable": True}})
    assert condition(raw(api, "/api/v1/nodes/node-4"), "Ready")["status"] == "Unknown"
    demo.clear("node-4")
    node = raw(api, "/api/v1/nodes/node-4")
    assert condition(node, "Ready")["status"] == "True"
    assert node["spec"]["unschedulable"] is True  # the operator's cordon stays
    assert [t["key"] for t in node["spec"]["taints"]] == ["node.kubernetes.io/unschedulable"]
    demo.fault("not_ready_node", "node-2", status="False")
    ready = condition(raw(api, "/api/v1/nodes/node-2"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "KubeletNotReady")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_it_rolls_out_a_bad_revision_with_zero_available_until_rollout_undo(demo: Sandbox, api: k8s.ApiClient) -> None:
    demo.fault("replication_failure", "payments/payments-api")
    deploy = raw(api, "/apis/apps/v1/namespaces/payments/deployments/payments-api")
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"].endswith("3.2.1-rc.1")
    assert deploy["status"].get("availableReplicas", 0) == 0
    assert deploy["status"]["unavailableReplicas"] == 2
    progressing = condition(deploy, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert condition(deploy, "Available")["status"] == "False"
    assert deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    result = subprocess.run(["kubectl", "--kubeconfig", demo.kubeconfig, "rollout", "undo", "deployment/payments-api",
                             "-n", "payments"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    deploy = raw(api, "/apis/apps/v1/namespaces/payments/deployments/payments-api")
    assert deploy["status"]["availableReplicas"] == 2
    assert condition(deploy, "Progressing")["reason"] == "NewReplicaSetAvailable"
    assert deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert active(demo, "payments/payments-api") == []


def _age_s(stamp: str) -> float:
    return (datetime.now(UTC) - datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)).total_seconds()


def _detected(demo: Sandbox) -> dict[str, set[str]]:
    """Finding types by pod name, as the watch loop would read them now."""
    from k8s.detectors import detect

    store = demo.sim.store
    out: dict[str, set[str]] = {}
    for f in detect(store.all("pods"), store.all("nodes"), store.all("deployments"), store.all("replicasets"),
                    store.all("horizontalpodautoscalers"), store.all("jobs")):
        out.setdefault(f.pod or f.name, set()).add(f.type)
    return out


def test_it_fails_readiness_probes_of_pods_running_past_the_allowance(demo: Sandbox, api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    # Fresh pods (the demo's are days old): the fault must still show an established failure.
    for pod in pods_of(api, "shop", "checkout"):
        core.delete_namespaced_pod(pod["metadata"]["name"], "shop")
    fresh = pods_of(api, "shop", "checkout")
    assert all(_age_s(container_status(p)["state"]["running"]["startedAt"]) < 30 for p in fresh)

    demo.fault("probe_failure", "shop/checkout")
    pods = pods_of(api, "shop", "checkout")
    assert {p["metadata"]["name"] for p in pods} == {p["metadata"]["name"] for p in fresh}
    allowance = 10 * 3  # the demo's readiness probe: periodSeconds 10 x failureThreshold 3
    for pod in pods:
        cs = container_status(pod)
        assert pod["status"]["phase"] == "Running"
        assert "running" in cs["state"] and cs["ready"] is False and cs["started"] is True and cs["restartCount"] == 0
        started = cs["state"]["running"]["startedAt"]
        assert _age_s(started) > allowance
        assert _age_s(pod["status"]["startTime"]) >= _age_s(started) and _age_s(pod["metadata"]["creationTimestamp"]) >= _age_s(started)
        for ctype in ("Ready", "ContainersReady"):
            cond = condition(pod, ctype)
            assert cond["status"] == "False" and cond["reason"] == "ContainersNotReady"
            assert cond["message"] == "containers with unready status: [checkout]"
            assert cond["lastTransitionTime"] == started  # never ready since it started
    events = raw(api, "/api/v1/namespaces/shop/events?fieldSelector=reason%3DUnhealthy")["items"]
    assert {e["involvedObject"]["name"] for e in events} == {p["metadata"]["name"] for p in pods}
    assert {e["message"] for e in events} == {"Readiness probe failed: HTTP probe failed with statuscode: 503"}
    assert {(e["type"], e["source"]["component"], e["involvedObject"]["fieldPath"]) for e in events} == {
        ("Warning", "kubelet", "spec.containers{checkout}")}
    detected = _detected(demo)
    assert all(detected.get(p["metadata"]["name"]) == {"probe_failure"} for p in pods), detected
    demo.tick(2)
    assert all(_detected(demo).get(p["metadata"]["name"]) == {"probe_failure"} for p in pods)
    log = core.read_namespaced_pod_log(pods[0]["metadata"]["name"], "shop", tail_lines=4)
    assert '"GET /ready HTTP/1.1" 503' in log

    # A replacement started after the fault fails too, but only once its allowance has passed.
    core.delete_namespaced_pod(pods[0]["metadata"]["name"], "shop")
    [replacement] = [p for p in pods_of(api, "shop", "checkout") if p["metadata"]["name"] not in {x["metadata"]["name"] for x in pods}]
    assert container_status(replacement)["ready"] is False
    assert _age_s(container_status(replacement)["state"]["running"]["startedAt"]) < allowance
    assert replacement["metadata"]["name"] not in _detected(demo)

    demo.clear("shop/checkout")
    pods = pods_of(api, "shop", "checkout")
    assert all(container_status(p)["ready"] and condition(p, "Ready")["status"] == "True" for p in pods)
    assert not any(p["metadata"]["name"] in _detected(demo) for p in pods)


def test_a_readiness_failure_survives_a_restart_and_clears_when_the_probe_is_changed(demo: Sandbox, api: k8s.ApiClient) -> None:
    demo.fault("probe_failure", "shop/checkout")
    apps = k8s.AppsV1Api(api)
    apps.patch_namespaced_deployment("checkout", "shop", {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}}}}})
    demo.tick(4)
    assert active(demo, "shop/checkout") == ["probe_failure"]  # same configuration, same failing probe
    pods = [p for p in pods_of(api, "shop", "checkout") if not p["metadata"].get("deletionTimestamp")]
    assert pods and not any(container_status(p)["ready"] for p in pods)

    # The operator's fix: a probe the service can answer (a longer timeout).
    apps.patch_namespaced_deployment("checkout", "shop", {"spec": {"template": {"spec": {"containers": [
        {"name": "checkout", "readinessProbe": {"timeoutSeconds": 5}}]}}}})
    demo.tick(4)
    assert active(demo, "shop/checkout") == []
    assert ("template changed" in [why for f, why in demo.sim.cleared if f.type == "probe_failure"])
    pods = [p for p in pods_of(api, "shop", "checkout") if not p["metadata"].get("deletionTimestamp")]
    assert pods and all(container_status(p)["ready"] for p in pods)


def test_a_liveness_probe_kills_and_restarts_the_container(demo: Sandbox, api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    demo.fault("probe_failure", "shop/cart", probe="liveness")
    pods = pods_of(api, "shop", "cart")
    for pod in pods:
        cs = container_status(pod)
        assert pod["status"]["phase"] == "Running"
        assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        assert cs["ready"] is False and cs["started"] is False and cs["restartCount"] == 4
        last = cs["lastState"]["terminated"]
        assert (last["exitCode"], last["reason"]) == (137, "Error")  # SIGKILL by the kubelet, not the kernel's OOMKilled
        # It ran past the liveness probe's allowance (10 s x 3) before the kill.
        ran = _age_s(last["startedAt"]) - _age_s(last["finishedAt"])
        assert ran > 30
        assert condition(pod, "Ready")["status"] == "False"
    events = raw(api, "/api/v1/namespaces/shop/events")["items"]
    mine = [e for e in events if e["involvedObject"]["name"] == pods[0]["metadata"]["name"]]
    by_reason = {(e["type"], e["reason"]): e["message"] for e in mine}
    assert by_reason[("Normal", "Killing")] == "Container cart failed liveness probe, will be restarted"
    assert any(e["reason"] == "Unhealthy" and e["message"].startswith("Liveness probe failed: Get \"http://")
               and ":8080/healthz" in e["message"] for e in mine), mine
    assert ("Warning", "BackOff") in by_reason
    assert all(_detected(demo).get(p["metadata"]["name"]) == {"probe_failure"} for p in pods)

    demo.tick(2)
    [pod] = [p for p in pods_of(api, "shop", "cart") if p["metadata"]["name"] == pods[0]["metadata"]["name"]]
    assert container_status(pod)["restartCount"] == 6
    killing = next(e for e in raw(api, "/api/v1/namespaces/shop/events?fieldSelector=reason%3DKilling")["items"]
                   if e["involvedObject"]["name"] == pod["metadata"]["name"])
    assert killing["count"] >= 3
    # The previous instance hung (the probe timed out), it did not crash: no stack trace.
    previous = core.read_namespaced_pod_log(pod["metadata"]["name"], "shop", previous=True)
    assert "panic" not in previous and "Traceback" not in previous
    assert previous.splitlines()[-1].endswith('"msg":"shutting down","signal":"terminated","grace":"30s"}')
    # While it backs off, its log is the killed instance's, which ended before it was killed.
    current = core.read_namespaced_pod_log(pod["metadata"]["name"], "shop")
    last_line = orjson.loads(current.splitlines()[-1])
    assert last_line["signal"] == "terminated"
    finished = container_status(pod)["lastState"]["terminated"]["finishedAt"]
    assert last_line["ts"][:19] <= finished[:19]

    demo.clear("shop/cart")
    pods = pods_of(api, "shop", "cart")
    assert all(container_status(p)["ready"] and "running" in container_status(p)["state"] for p in pods)
    assert not any(p["metadata"]["name"] in _detected(demo) for p in pods)


def test_it_refuses_a_probe_fault_it_cannot_make(demo: Sandbox, api: k8s.ApiClient) -> None:
    with pytest.raises(FaultError, match="option probe='startup' must be readiness or liveness"):
        demo.fault("probe_failure", "shop/cart", probe="startup")
    with pytest.raises(FaultError, match="has no container 'sidecar'"):
        demo.fault("probe_failure", "shop/cart", container="sidecar")
    apps = k8s.AppsV1Api(api)
    apps.patch_namespaced_deployment("cart", "shop", {"spec": {"template": {"spec": {"containers": [
        {"name": "cart", "readinessProbe": None}]}}}})
    with pytest.raises(FaultError, match="container 'cart' of shop/cart has no readiness probe to fail"):
        demo.fault("probe_failure", "shop/cart")
    assert "probe_failure" not in {f["type"] for f in demo.faults()}


def test_it_maxes_an_hpa_until_max_replicas_is_raised_above_the_demand(demo: Sandbox, api: k8s.ApiClient) -> None:
    demo.fault("hpa_maxed", "shop/cart", demand=8)
    hpa = raw(api, "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers/cart")
    assert hpa["status"]["desiredReplicas"] == 6 and hpa["status"]["currentReplicas"] == 6
    limited = condition(hpa, "ScalingLimited")
    assert (limited["status"], limited["reason"]) == ("True", "TooManyReplicas")
    assert hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"] > 70
    autoscaling = k8s.AutoscalingV2Api(api)
    autoscaling.patch_namespaced_horizontal_pod_autoscaler("cart", "shop", {"spec": {"maxReplicas": 8}})
    assert active(demo, "shop/cart") == ["hpa_maxed"]  # equal to the demand is still maxed out
    autoscaling.patch_namespaced_horizontal_pod_autoscaler("cart", "shop", {"spec": {"maxReplicas": 10}})
    hpa = raw(api, "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers/cart")
    assert hpa["status"]["desiredReplicas"] == 8
    assert condition(hpa, "ScalingLimited")["status"] == "False"
    assert len(pods_of(api, "shop", "cart")) == 8
    assert active(demo, "shop/cart") == []


def test_it_fails_a_job_past_its_backoff_limit(demo: Sandbox, api: k8s.ApiClient) -> None:
    demo.fault("failed_job", "data/nightly-export")
    job = raw(api, "/apis/batch/v1/namespaces/data/jobs/nightly-export")
    failed = condition(job, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "BackoffLimitExceeded")
    assert job["status"]["failed"] == 4  # backoffLimit 3, plus the first try
    pods = raw(api, "/api/v1/namespaces/data/pods?labelSelector=job-name%3Dnightly-export")["items"]
    assert len(pods) == 4 and all(p["status"]["phase"] == "Failed" for p in pods)
    log = k8s.CoreV1Api(api).read_namespaced_pod_log(pods[0]["metadata"]["name"], "data")
    assert "KeyError: 'EXPORT_BUCKET'" in log
    demo.clear("data/nightly-export")
    job = raw(api, "/apis/batch/v1/namespaces/data/jobs/nightly-export")
    assert condition(job, "Complete")["status"] == "True"


def test_it_evicts_a_pod_under_memory_pressure_and_replaces_it(demo: Sandbox, api: k8s.ApiClient) -> None:
    demo.fault("evicted", "shop/frontend")
    pods = pods_of(api, "shop", "frontend")
    evicted = [p for p in pods if p["status"].get("reason") == "Evicted"]
    assert len(evicted) == 1 and len(pods) == 4
    assert evicted[0]["status"]["phase"] == "Failed"
    assert evicted[0]["status"]["message"].startswith("The node was low on resource: memory.")
    assert condition(evicted[0], "DisruptionTarget")["reason"] == "TerminationByKubelet"
    k8s.CoreV1Api(api).delete_namespaced_pod(evicted[0]["metadata"]["name"], "shop")
    assert active(demo, "shop/frontend") == []


def test_it_refuses_bad_fault_requests_by_name(demo: Sandbox) -> None:
    with pytest.raises(FaultError, match="unknown fault type 'meltdown'"):
        demo.fault("meltdown", "shop/cart")
    with pytest.raises(FaultError, match="no deployment"):
        demo.fault("crash_loop", "shop/nothing")
    with pytest.raises(FaultError, match="no node named 'node-9'"):
        demo.fault("not_ready_node", "node-9")
    with pytest.raises(FaultError, match="must be NAMESPACE/NAME"):
        demo.fault("oom_killed", "cart")
    with pytest.raises(FaultError, match="must be above the memory limit"):
        demo.fault("oom_killed", "shop/cart", need="100Mi")
    with pytest.raises(FaultError, match="no active fault on 'shop/cart'"):
        demo.clear("shop/cart")
    assert sorted(f["type"] for f in demo.faults()) == ["crash_loop", "not_ready_node", "oom_killed"]


@pytest.mark.parametrize(
    ("ftype", "target", "workload"),
    [
        ("crash_loop", "shop/checkout", "Deployment/shop/checkout"),
        ("oom_killed", "shop/cart", "Deployment/shop/cart"),
        ("image_pull_failure", "shop/frontend", "Deployment/shop/frontend"),
        ("unschedulable", "shop/cart", "Deployment/shop/cart"),
        ("not_ready_node", "node-2", "Node//node-2"),
        ("replication_failure", "payments/payments-api", "Deployment/payments/payments-api"),
        ("probe_failure", "shop/checkout", "Deployment/shop/checkout"),
        ("probe_failure:liveness", "shop/cart", "Deployment/shop/cart"),
        ("hpa_maxed", "shop/cart", "Deployment/shop/cart"),
        ("failed_job", "data/nightly-export", "Job/data/nightly-export"),
        ("evicted", "shop/frontend", "Deployment/shop/frontend"),
    ],
)
def test_the_detectors_find_each_fault_as_its_own_type(demo: Sandbox, ftype: str, target: str, workload: str) -> None:
    """The contract with the watch loop: what a fault writes is what `k8s.detectors` reads."""
    from k8s.detectors import detect

    def findings() -> set[tuple[str, str]]:
        store = demo.sim.store
        return {(f.type, f.workload_key()) for f in detect(
            store.all("pods"), store.all("nodes"), store.all("deployments"), store.all("replicasets"),
            store.all("horizontalpodautoscalers"), store.all("jobs"))}

    ftype, _, probe = ftype.partition(":")
    assert (ftype, workload) not in findings()
    demo.fault(ftype, target, **({"probe": probe} if probe else {}))
    assert (ftype, workload) in findings()
    if ftype == "probe_failure":  # a probe's kill is the probe's finding, not a crash loop's
        assert not {t for t, w in findings() if w == workload} & {"crash_loop", "oom_killed", "high_restart_rate"}
    demo.clear(target if ftype != "hpa_maxed" else "shop/cart")
    assert (ftype, workload) not in findings()
