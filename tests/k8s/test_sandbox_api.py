"""The kubernetes Python client against the sandbox: list (paginated), read, patch in the three
formats, delete, eviction with PDBs, watch; bad requests answered with the API's codes and
Status bodies; and 10,000 pods listed whole and paginated."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from kubernetes import client as k8s
from kubernetes import watch

from k8s.sandbox import Sandbox


@pytest.fixture
def demo(sandbox: Sandbox) -> Sandbox:
    sandbox.reset("demo")
    return sandbox


@pytest.fixture(scope="module")
def api(sandbox: Sandbox) -> Iterator[k8s.ApiClient]:
    api_client = sandbox.api_client()
    yield api_client
    api_client.close()


def http(sandbox: Sandbox, method: str, path: str, *, token: bool = True, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {sandbox.token}"
    with httpx.Client(verify=False) as session:  # noqa: S501  (the sandbox's own self-signed CA)
        return session.request(method, sandbox.url + path, headers=headers, timeout=20, **kwargs)


def status_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == response.status_code
    return response.status_code, body["reason"], body["message"]


def test_it_lists_every_kind_the_watch_loop_reads_paginated_as_raw_json(demo: Sandbox, api: k8s.ApiClient) -> None:
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    listers = {
        "PodList": core.list_pod_for_all_namespaces, "NodeList": core.list_node,
        "DeploymentList": apps.list_deployment_for_all_namespaces, "ReplicaSetList": apps.list_replica_set_for_all_namespaces,
        "HorizontalPodAutoscalerList": k8s.AutoscalingV2Api(api).list_horizontal_pod_autoscaler_for_all_namespaces,
        "JobList": k8s.BatchV1Api(api).list_job_for_all_namespaces,
    }
    for kind, lister in listers.items():
        whole = orjson.loads(lister(_preload_content=False).data)
        assert whole["kind"] == kind and whole["metadata"]["resourceVersion"]
        names, token, pages = [], None, 0
        while True:
            page = orjson.loads(lister(limit=3, _continue=token, _preload_content=False).data)
            names += [i["metadata"]["name"] for i in page["items"]]
            pages += 1
            token = page["metadata"].get("continue")
            if not token:
                break
            assert page["metadata"]["remainingItemCount"] >= 1
        assert names == [i["metadata"]["name"] for i in whole["items"]], kind
        assert pages == max(1, -(-len(names) // 3))
    pods = core.list_pod_for_all_namespaces()  # through the client's models too
    assert len(pods.items) == 17


def test_it_reads_with_label_and_field_selectors(demo: Sandbox, api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    on_node = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-4").items
    assert on_node and all(p.spec.node_name == "node-4" for p in on_node)
    shop = core.list_namespaced_pod("shop", label_selector="app.kubernetes.io/name in (cart,checkout)").items
    assert {p.metadata.labels["app.kubernetes.io/name"] for p in shop} == {"cart", "checkout"}
    not_running = core.list_pod_for_all_namespaces(field_selector="status.phase!=Running").items
    assert [p.metadata.name.startswith("nightly-export-") for p in not_running] == [True]
    deploy = k8s.AppsV1Api(api).read_namespaced_deployment("checkout", "shop")
    assert deploy.spec.replicas == 2 and deploy.status.ready_replicas == 2
    node = core.read_node("node-1")
    assert node.status.node_info.kubelet_version == "v1.32.4"


def test_it_patches_with_strategic_merge_json_merge_and_json_patch(demo: Sandbox, api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    # Strategic merge (the client's default for a dict): containers merge by name.
    apps.patch_namespaced_deployment("payments-api", "payments", {"spec": {"template": {"spec": {"containers": [
        {"name": "payments-api", "resources": {"limits": {"memory": "1Gi"}}}]}}}})
    container = apps.read_namespaced_deployment("payments-api", "payments").spec.template.spec.containers[0]
    assert container.resources.limits == {"memory": "1Gi"} and container.image.endswith(":3.2.1")
    # JSON merge patch replaces lists whole.
    api.set_default_header("Content-Type", "application/merge-patch+json")
    try:
        k8s.AutoscalingV2Api(api).patch_namespaced_horizontal_pod_autoscaler("cart", "shop", {"spec": {"maxReplicas": 9}})
    finally:
        api.default_headers.pop("Content-Type")
    assert k8s.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler("cart", "shop").spec.max_replicas == 9
    # JSON patch (a list).
    apps.patch_namespaced_deployment_scale("frontend", "shop", [{"op": "replace", "path": "/spec/replicas", "value": 1}])
    assert apps.read_namespaced_deployment("frontend", "shop").status.replicas == 1
    # Cordon = patch spec.unschedulable.
    k8s.CoreV1Api(api).patch_node("node-2", {"spec": {"unschedulable": True}})
    assert k8s.CoreV1Api(api).read_node("node-2").spec.unschedulable is True


def test_it_deletes_a_pod_and_its_replica_set_makes_a_new_one(demo: Sandbox, api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    before = {p.metadata.name for p in core.list_namespaced_pod("shop", label_selector="app.kubernetes.io/name=cart").items}
    victim = sorted(before)[0]
    deleted = core.delete_namespaced_pod(victim, "shop")
    assert deleted.metadata.name == victim and deleted.metadata.deletion_timestamp is not None
    after = {p.metadata.name for p in core.list_namespaced_pod("shop", label_selector="app.kubernetes.io/name=cart").items}
    assert len(after) == 2 and victim not in after
    k8s.AppsV1Api(api).delete_namespaced_deployment("cart", "shop")
    with pytest.raises(k8s.ApiException) as gone:
        k8s.AppsV1Api(api).read_namespaced_deployment("cart", "shop")
    assert gone.value.status == 404
    # The garbage collector's part: its replica sets and pods go with it.
    assert k8s.AppsV1Api(api).list_namespaced_replica_set("shop", label_selector="app.kubernetes.io/name=cart").items == []
    assert core.list_namespaced_pod("shop", label_selector="app.kubernetes.io/name=cart").items == []


def test_it_evicts_pods_honouring_pod_disruption_budgets(demo: Sandbox, api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    demo.clear("node-4")
    pods = sorted(p.metadata.name for p in core.list_namespaced_pod("payments", label_selector="app.kubernetes.io/name=payments-api").items)
    assert len(pods) == 2
    body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=pods[0], namespace="payments"))
    # minAvailable 1 of 2 healthy: the first eviction is allowed; the replacement is healthy at once.
    core.create_namespaced_pod_eviction(pods[0], "payments", body)
    budget = k8s.PolicyV1Api(api).read_namespaced_pod_disruption_budget("payments-api", "payments").status
    assert (budget.current_healthy, budget.desired_healthy, budget.disruptions_allowed) == (2, 1, 1)
    k8s.AppsV1Api(api).patch_namespaced_deployment_scale("payments-api", "payments", {"spec": {"replicas": 1}})
    [last] = core.list_namespaced_pod("payments", label_selector="app.kubernetes.io/name=payments-api").items
    with pytest.raises(k8s.ApiException) as refused:
        core.create_namespaced_pod_eviction(last.metadata.name, "payments",
                                            k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=last.metadata.name, namespace="payments")))
    assert refused.value.status == 429
    body = orjson.loads(refused.value.body)
    assert body["reason"] == "TooManyRequests"
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"][0]["reason"] == "DisruptionBudget"


def test_it_streams_watch_events(demo: Sandbox, api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    rv = core.list_namespaced_pod("payments").metadata.resource_version
    seen: list[tuple[str, str]] = []
    stream = watch.Watch()

    def consume() -> None:
        for event in stream.stream(core.list_namespaced_pod, "payments", resource_version=rv, timeout_seconds=10):
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "ADDED":
                stream.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.3)
    ledger = core.list_namespaced_pod("payments", label_selector="app.kubernetes.io/name=ledger").items[0]
    core.delete_namespaced_pod(ledger.metadata.name, "payments")
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert ("DELETED", ledger.metadata.name) in seen
    assert seen[-1][0] == "ADDED" and seen[-1][1].startswith("ledger-")


def test_it_answers_bad_requests_with_real_codes_and_status_bodies(demo: Sandbox) -> None:
    assert status_of(http(demo, "GET", "/api/v1/pods", token=False)) == (401, "Unauthorized", "Unauthorized")
    assert status_of(http(demo, "GET", "/api/v1/widgets")) == (404, "NotFound", "the server could not find the requested resource")
    assert status_of(http(demo, "GET", "/apis/apps/v1/namespaces/shop/deployments/ghost")) == (
        404, "NotFound", 'deployments.apps "ghost" not found')
    assert http(demo, "GET", "/apis/apps/v1/namespaces/shop/deployments/ghost").json()["details"] == {
        "name": "ghost", "group": "apps", "kind": "deployments"}
    patch_headers = {"Content-Type": "application/strategic-merge-patch+json"}
    code, reason, message = status_of(http(demo, "PATCH", "/apis/apps/v1/namespaces/shop/deployments/cart",
                                           content=b"{not json", headers=patch_headers))
    assert (code, reason) == (400, "BadRequest") and message.startswith("error decoding patch")
    code, reason, _ = status_of(http(demo, "PATCH", "/apis/apps/v1/namespaces/shop/deployments/cart",
                                     content=b'{"spec":{}}', headers={"Content-Type": "text/plain"}))
    assert (code, reason) == (415, "UnsupportedMediaType")
    code, reason, message = status_of(http(demo, "PATCH", "/apis/apps/v1/namespaces/shop/deployments/cart",
                                           content=b'[{"op":"remove","path":"/spec/nothing"}]',
                                           headers={"Content-Type": "application/json-patch+json"}))
    assert (code, reason) == (422, "Invalid") and "/spec/nothing" in message
    code, reason, message = status_of(http(demo, "PATCH", "/apis/apps/v1/namespaces/shop/deployments/cart",
                                           content=b'{"spec":{"replicas":-1}}', headers=patch_headers))
    assert (code, reason) == (422, "Invalid")
    assert 'Deployment.apps "cart" is invalid: spec.replicas' in message
    code, reason, message = status_of(http(demo, "GET", "/api/v1/pods?fieldSelector=spec.colour%3Dblue"))
    assert (code, reason, message) == (400, "BadRequest", "field label not supported: spec.colour")
    code, reason, _ = status_of(http(demo, "GET", "/api/v1/pods?limit=2&continue=garbage"))
    assert (code, reason) == (400, "BadRequest")
    code, reason, _ = status_of(http(demo, "POST", "/api/v1/namespaces/shop/pods/x/eviction", content=b"{"))
    assert (code, reason) == (400, "BadRequest")
    assert status_of(http(demo, "DELETE", "/api/v1/nodes"))[:2] == (405, "MethodNotAllowed")
    assert status_of(http(demo, "POST", "/sandbox/v1/faults", token=False))[:2] == (401, "Unauthorized")
    # Nothing was half-written: the deployment is as it was.
    deploy = http(demo, "GET", "/apis/apps/v1/namespaces/shop/deployments/cart").json()
    assert deploy["spec"]["replicas"] == 2 and deploy["metadata"]["generation"] == 1


def test_it_serves_discovery_that_kubectl_and_client_go_accept(demo: Sandbox) -> None:
    assert http(demo, "GET", "/api").json()["versions"] == ["v1"]
    groups = {g["name"]: g["preferredVersion"]["groupVersion"] for g in http(demo, "GET", "/apis").json()["groups"]}
    assert groups == {"apps": "apps/v1", "authorization.k8s.io": "authorization.k8s.io/v1", "autoscaling": "autoscaling/v2",
                      "batch": "batch/v1", "coordination.k8s.io": "coordination.k8s.io/v1", "policy": "policy/v1",
                      "metrics.k8s.io": "metrics.k8s.io/v1beta1"}
    core = {r["name"]: r for r in http(demo, "GET", "/api/v1").json()["resources"]}
    assert core["pods/eviction"]["group"] == "policy" and core["pods/eviction"]["kind"] == "Eviction"
    assert "pods/log" in core and core["nodes"]["namespaced"] is False
    assert http(demo, "GET", "/version", token=False).json()["gitVersion"].startswith("v1.32")


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A second sandbox, plain HTTP (the unauthenticated loopback mode), with 10,000 pods."""
    instance = Sandbox(scenario="empty", state_dir=tmp_path_factory.mktemp("big")).start()
    instance.generate(10_000)
    yield instance
    instance.stop()


def test_it_lists_ten_thousand_pods_whole_and_paginated(big: Sandbox) -> None:
    api_client = big.api_client()
    try:
        core = k8s.CoreV1Api(api_client)
        started = time.monotonic()
        whole = orjson.loads(core.list_pod_for_all_namespaces(_preload_content=False).data)
        assert len(whole["items"]) == 10_000
        names: list[str] = []
        token = None
        while True:
            page = orjson.loads(core.list_pod_for_all_namespaces(limit=500, _continue=token, _preload_content=False).data)
            names += [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in page["items"]]
            token = page["metadata"].get("continue")
            if not token:
                break
        assert len(names) == len(set(names)) == 10_000
        assert all(p["status"]["phase"] == "Running" for p in whole["items"])
        assert time.monotonic() - started < 60
    finally:
        api_client.close()


def test_it_exports_metrics_that_move(demo: Sandbox) -> None:
    def sample(name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        text = http(demo, "GET", "/metrics", token=False).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return float(s.value)
        return 0.0

    before = sample("aiops_sandbox_requests_total", code="404", verb="GET")
    http(demo, "GET", "/api/v1/namespaces/shop/pods/nope")
    assert sample("aiops_sandbox_requests_total", code="404", verb="GET") == before + 1
    assert sample("aiops_sandbox_faults_active", type="crash_loop") == 1
    cleared = sample("aiops_sandbox_faults_cleared_total", type="crash_loop", by="fault clear")
    demo.clear("payments/ledger")
    assert sample("aiops_sandbox_faults_active", type="crash_loop") == 0
    assert sample("aiops_sandbox_faults_cleared_total", type="crash_loop", by="fault clear") == cleared + 1
    assert sample("aiops_sandbox_objects", resource="pods") == 17


def test_it_creates_objects_and_refuses_duplicates_and_missing_namespaces(demo: Sandbox, api: k8s.ApiClient) -> None:
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="team-a")))
    body = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
    }
    created = apps.create_namespaced_deployment("team-a", body)
    assert created.metadata.uid and created.metadata.generation == 1
    pods = core.list_namespaced_pod("team-a", label_selector="app=web").items
    assert len(pods) == 2 and all(p.status.phase == "Running" for p in pods)
    with pytest.raises(k8s.ApiException) as duplicate:
        apps.create_namespaced_deployment("team-a", body)
    assert duplicate.value.status == 409 and orjson.loads(duplicate.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(k8s.ApiException) as nowhere:
        apps.create_namespaced_deployment("team-b", body)
    assert nowhere.value.status == 404 and orjson.loads(nowhere.value.body)["message"] == 'namespaces "team-b" not found'
    bad = {**body, "metadata": {"name": "Bad_Name"}}
    with pytest.raises(k8s.ApiException) as invalid:
        apps.create_namespaced_deployment("team-a", bad)
    assert invalid.value.status == 422
    assert orjson.loads(invalid.value.body)["details"]["causes"][0]["field"] == "metadata.name"
    core.delete_namespace("team-a")
    assert core.list_namespaced_pod("team-a").items == []


def test_it_refuses_bodies_it_cannot_read_with_415_before_decoding_them(demo: Sandbox) -> None:
    namespace = orjson.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "plain"}})
    code, reason, message = status_of(http(demo, "POST", "/api/v1/namespaces", content=namespace,
                                           headers={"Content-Type": "text/plain"}))
    assert (code, reason) == (415, "UnsupportedMediaType") and '(got "text/plain")' in message
    code, reason, _ = status_of(http(demo, "POST", "/api/v1/namespaces", content=namespace,
                                     headers={"Content-Type": "application/yaml"}))
    assert (code, reason) == (415, "UnsupportedMediaType")
    # Protobuf the sandbox has no schema for (a Service), or that is not protobuf at all: 415, never misread.
    type_meta = b"\x0a\x02v1\x12\x07Service"
    service = b"k8s\x00" + b"\x0a" + bytes([len(type_meta)]) + type_meta + b"\x12\x00"
    for body in (service, b"k8s\x00\x0a\xff", namespace):
        code, reason, message = status_of(http(demo, "POST", "/api/v1/namespaces/shop/pods", content=body,
                                               headers={"Content-Type": "application/vnd.kubernetes.protobuf"}))
        assert (code, reason) == (415, "UnsupportedMediaType") and "cannot read this protobuf body" in message
    assert http(demo, "GET", "/api/v1/namespaces/plain").status_code == 404
    # No Content-Type reads as JSON, as kube-apiserver does.
    assert http(demo, "POST", "/api/v1/namespaces", content=namespace).status_code == 201


def test_it_answers_access_reviews_allowed_and_stores_nothing(demo: Sandbox) -> None:
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": "alice", "resourceAttributes": {"verb": "list", "resource": "pods"}}}
    answer = http(demo, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review)
    assert answer.status_code == 201
    assert answer.json()["status"]["allowed"] is True and answer.json()["spec"] == review["spec"]
    code, reason, message = status_of(http(demo, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                                           json={**review, "spec": {"resourceAttributes": {"verb": "get"}}}))
    assert (code, reason) == (422, "Invalid") and "at least one of user or group" in message
    code, reason, message = status_of(http(demo, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                                           json={"spec": {}}))
    assert (code, reason) == (422, "Invalid") and "exactly one of nonResourceAttributes or resourceAttributes" in message
    code, reason, _ = status_of(http(demo, "GET", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"))
    assert (code, reason) == (405, "MethodNotAllowed")


def test_it_serves_openapi_documents_that_describe_every_object_it_holds(demo: Sandbox) -> None:
    from k8s.sandbox import openapi
    from k8s.sandbox.resources import BY_PLURAL

    index = http(demo, "GET", "/openapi/v3").json()["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/batch/v1", "apis/autoscaling/v2"} <= set(index)
    apps = http(demo, "GET", index["apis/apps/v1"]["serverRelativeURL"]).json()
    deployment = apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]
    assert deployment["x-kubernetes-group-version-kind"] == [{"group": "apps", "kind": "Deployment", "version": "v1"}]
    patch = apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert any(p["name"] == "fieldValidation" for p in patch["parameters"])
    assert http(demo, "GET", "/openapi/v3/apis/nope/v1").status_code == 404
    v2 = http(demo, "GET", "/openapi/v2", headers={"Accept": "application/json"}).json()
    assert v2["swagger"] == "2.0" and "io.k8s.api.core.v1.Pod" in v2["definitions"]
    # kubectl's fallback asks for v2 as protobuf only: refused plainly, not answered with JSON it cannot read.
    code, reason, _ = status_of(http(demo, "GET", "/openapi/v2", headers={"Accept": openapi.V2_PROTOBUF}))
    assert (code, reason) == (406, "NotAcceptable")
    # Every object the simulation writes is one the schema describes (no invented fields).
    demo.tick()
    for plural, objects in demo.sim.store.objects.items():
        for obj in objects.values():
            assert openapi.unknown_fields(BY_PLURAL[plural], obj) == [], (plural, obj["metadata"]["name"])


def test_server_side_apply_answers_bad_applies_with_4xx(demo: Sandbox) -> None:
    path = "/api/v1/namespaces/shop/configmaps/settings"
    apply = {"Content-Type": "application/apply-patch+yaml"}
    config = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n"
    code, reason, message = status_of(http(demo, "PATCH", path, content=config, headers=apply))
    assert (code, reason) == (422, "Invalid") and "fieldManager: Required value" in message
    code, _, message = status_of(http(demo, "PATCH", path + "?fieldManager=me", content="a: [", headers=apply))
    assert code == 400 and "error decoding YAML" in message
    code, _, message = status_of(http(demo, "PATCH", path + "?fieldManager=me", content=config.replace("v1\n", "v2\n", 1), headers=apply))
    assert code == 400 and "apiVersion must be 'v1'" in message
    created = http(demo, "PATCH", path + "?fieldManager=me", content=config, headers=apply)
    assert created.status_code == 201 and created.json()["data"] == {"mode": "fast"}
    assert created.json()["metadata"]["managedFields"][0]["fieldsV1"] == {"f:data": {"f:mode": {}}}
    # A plain update takes the fields it changed; the applier no longer owns them.
    updated = http(demo, "PATCH", path, json={"data": {"mode": "slow"}},
                   headers={"Content-Type": "application/merge-patch+json", "User-Agent": "ops-script/1.0"})
    assert updated.status_code == 200
    assert {(m["manager"], m["operation"]) for m in updated.json()["metadata"]["managedFields"]} == {("ops-script", "Update")}
