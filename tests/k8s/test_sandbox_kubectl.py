"""The real kubectl 1.32 against the sandbox: the commands issue 3 lists, with their results."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest

from k8s.sandbox import Sandbox

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (.ci/run installs it)"),
]


def kubectl(sandbox: Sandbox, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", sandbox.kubeconfig, "--request-timeout", "20s", *args],
        capture_output=True, text=True, timeout=60,
    )
    if ok:
        assert result.returncode == 0, f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def pod_of(sandbox: Sandbox, namespace: str, prefix: str, *, crashing: bool = False) -> str:
    names = sorted(p["metadata"]["name"] for p in sandbox.sim.store.all("pods", namespace)
                   if p["metadata"]["name"].startswith(prefix + "-") and p["status"].get("phase") != "Failed"
                   and (not crashing or "waiting" in p["status"]["containerStatuses"][0]["state"]))
    assert names, f"no pod of {namespace}/{prefix}"
    return names[0]


@pytest.fixture
def demo(sandbox: Sandbox) -> Sandbox:
    sandbox.reset("demo")
    return sandbox


def test_it_lists_pods_in_all_namespaces_with_their_status(demo: Sandbox) -> None:
    out = kubectl(demo, "get", "pods", "-A").stdout
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    ledger = [line for line in lines if " ledger-" in line]
    assert all(line.split()[0] == "payments" for line in ledger)
    assert sorted(line.split()[3] for line in ledger) == ["CrashLoopBackOff", "Running"]
    assert "0/1" in next(line for line in ledger if "CrashLoopBackOff" in line)
    assert "CrashLoopBackOff" in next(line for line in lines if "report-builder-" in line)
    assert sum("Running" in line for line in lines) >= 10


def test_it_describes_a_crash_looping_pod_with_last_state_and_events(demo: Sandbox) -> None:
    pod = pod_of(demo, "payments", "ledger", crashing=True)
    out = kubectl(demo, "describe", "pod", "-n", "payments", pod).stdout
    assert "Controlled By:  ReplicaSet/ledger-" in out
    assert "Reason:       CrashLoopBackOff" in out
    assert "Last State:     Terminated" in out and "Exit Code:    1" in out
    assert "Restart Count:  4" in out
    assert "Back-off restarting failed container ledger" in out


def test_it_serves_the_previous_logs_of_a_crashed_container(demo: Sandbox) -> None:
    pod = pod_of(demo, "payments", "ledger", crashing=True)
    out = kubectl(demo, "logs", "-n", "payments", pod, "--previous").stdout
    assert "Traceback (most recent call last):" in out
    assert "Connection refused" in out
    tail = kubectl(demo, "logs", "-n", "payments", pod, "--previous", "--tail", "2").stdout
    assert len(tail.splitlines()) == 2
    healthy = pod_of(demo, "shop", "checkout")
    refused = kubectl(demo, "logs", "-n", "shop", healthy, "--previous", ok=False)
    assert refused.returncode != 0
    assert f'previous terminated container "checkout" in pod "{healthy}" not found' in refused.stderr


def test_it_cordons_and_drains_the_not_ready_node_so_its_pods_run_elsewhere(demo: Sandbox) -> None:
    on_node = [p for p in demo.sim.store.all("pods") if p["spec"].get("nodeName") == "node-4"
               and not p["metadata"]["namespace"] == "monitoring"]
    assert on_node, "the demo puts workload pods on the NotReady node"
    kubectl(demo, "cordon", "node-4")
    assert "Ready,SchedulingDisabled" in kubectl(demo, "get", "node", "node-4").stdout or \
        "NotReady,SchedulingDisabled" in kubectl(demo, "get", "node", "node-4").stdout
    out = kubectl(demo, "drain", "node-4", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout", "30s")
    assert "node/node-4 drained" in out.stdout
    remaining = [p for p in demo.sim.store.all("pods") if p["spec"].get("nodeName") == "node-4"]
    assert all(p["metadata"]["namespace"] == "monitoring" for p in remaining)  # DaemonSet pods stay
    wide = kubectl(demo, "get", "pods", "-n", "shop", "-o", "wide").stdout
    assert "node-4" not in wide
    deploys = kubectl(demo, "get", "deploy", "-n", "shop", "cart", "-o", "jsonpath={.status.readyReplicas}").stdout
    assert deploys == "2"


def test_it_scales_a_deployment(demo: Sandbox) -> None:
    out = kubectl(demo, "scale", "deployment", "frontend", "-n", "shop", "--replicas=5")
    assert "deployment.apps/frontend scaled" in out.stdout
    ready = kubectl(demo, "get", "deploy", "frontend", "-n", "shop", "-o", "jsonpath={.spec.replicas} {.status.readyReplicas}").stdout
    assert ready == "5 5"
    assert len([p for p in demo.sim.store.all("pods", "shop") if p["metadata"]["name"].startswith("frontend-")]) == 5


def test_it_keeps_rollout_history_and_undoes_to_the_previous_revision(demo: Sandbox) -> None:
    history = kubectl(demo, "rollout", "history", "deployment/checkout", "-n", "shop").stdout
    assert "checkout=registry.example.com/shop/checkout:1.5.0" in history
    assert [line.split()[0] for line in history.splitlines() if line[:1].isdigit()] == ["1", "2", "3"]
    out = kubectl(demo, "rollout", "undo", "deployment/checkout", "-n", "shop")
    assert "deployment.apps/checkout rolled back" in out.stdout
    image = kubectl(demo, "get", "deploy", "checkout", "-n", "shop", "-o", "jsonpath={.spec.template.spec.containers[0].image}").stdout
    assert image == "registry.example.com/shop/checkout:1.5.0"
    history = kubectl(demo, "rollout", "history", "deployment/checkout", "-n", "shop").stdout
    assert [line.split()[0] for line in history.splitlines() if line[:1].isdigit()] == ["1", "3", "4"]
    status = kubectl(demo, "rollout", "status", "deployment/checkout", "-n", "shop", "--timeout", "10s")
    assert 'deployment "checkout" successfully rolled out' in status.stdout


def test_it_restarts_a_deployment_with_new_pods(demo: Sandbox) -> None:
    before = {p["metadata"]["name"] for p in demo.sim.store.all("pods", "payments") if p["metadata"]["name"].startswith("ledger-")}
    kubectl(demo, "rollout", "restart", "deployment/ledger", "-n", "payments")
    after = {p["metadata"]["name"] for p in demo.sim.store.all("pods", "payments") if p["metadata"]["name"].startswith("ledger-")}
    assert after and not (before & after)
    # The demo's crash loop is transient: the restarted pod runs.
    assert "Running" in kubectl(demo, "get", "pods", "-n", "payments", *sorted(after)).stdout
    assert not [f for f in demo.faults() if f["target"] == "payments/ledger"]


def test_it_answers_unknown_resources_and_missing_objects_like_the_api_server(demo: Sandbox) -> None:
    missing = kubectl(demo, "get", "pod", "nope", "-n", "shop", ok=False)
    assert missing.returncode == 1
    assert 'Error from server (NotFound): pods "nope" not found' in missing.stderr
    unknown = kubectl(demo, "get", "widgets", ok=False)
    assert unknown.returncode == 1
    assert 'the server doesn\'t have a resource type "widgets"' in unknown.stderr


def test_it_reads_what_kubectl_creates_as_protobuf(demo: Sandbox) -> None:
    # kubectl 1.32's typed client sends these as application/vnd.kubernetes.protobuf and does not
    # resend them as JSON after a 415: the sandbox reads them.
    assert "namespace/x created" in kubectl(demo, "create", "namespace", "x").stdout
    assert "deployment.apps/d created" in kubectl(demo, "create", "deployment", "d", "--image=nginx", "-n", "x").stdout
    kubectl(demo, "create", "deployment", "idle", "--image=nginx:1.27", "--port=80", "--replicas=0", "-n", "x")
    spec = kubectl(demo, "get", "deploy", "-n", "x", "-o", "jsonpath={range .items[*]}{.metadata.name}={.spec.replicas}"
                   " {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort};{end}").stdout
    assert spec == "d=1 nginx ;idle=0 nginx:1.27 80;"  # an explicit replicas: 0 is kept, not defaulted
    assert kubectl(demo, "get", "ns", "x", "-o", "jsonpath={.status.phase}").stdout == "Active"
    pods = kubectl(demo, "get", "pods", "-n", "x").stdout
    assert len([line for line in pods.splitlines() if line.startswith("d-") and "Running" in line]) == 1


def test_it_answers_access_reviews_so_kubectl_auth_can_i_says_yes(demo: Sandbox) -> None:
    assert kubectl(demo, "auth", "can-i", "list", "pods", "-A").stdout.strip() == "yes"
    assert kubectl(demo, "auth", "can-i", "delete", "deployments", "-n", "shop").stdout.strip() == "yes"
    resources = kubectl(demo, "api-resources", "--api-group=authorization.k8s.io").stdout
    assert "selfsubjectaccessreviews" in resources and "subjectaccessreviews" in resources


def test_scaling_a_replicaset_down_removes_its_newest_pods(demo: Sandbox) -> None:
    def frontend() -> set[str]:
        return {p["metadata"]["name"] for p in demo.sim.store.all("pods", "shop") if p["metadata"]["name"].startswith("frontend-")}

    before = frontend()
    kubectl(demo, "scale", "deployment", "frontend", "-n", "shop", f"--replicas={len(before) + 3}")
    added = frontend() - before
    assert len(added) == 3
    in_creation_order = [p["metadata"]["name"] for p in demo.sim.store.all("pods", "shop") if p["metadata"]["name"] in added]
    kubectl(demo, "scale", "deployment", "frontend", "-n", "shop", f"--replicas={len(before) + 1}")
    kept = frontend()
    # The older pods all stay; of the three created together, the first created is the one kept.
    assert before < kept and kept & added == {in_creation_order[0]}
    kubectl(demo, "scale", "deployment", "frontend", "-n", "shop", f"--replicas={len(before)}")
    assert frontend() == before


def test_each_node_has_a_lease_renewed_while_it_is_ready(demo: Sandbox) -> None:
    ready = kubectl(demo, "describe", "node", "node-1")
    assert "Failed to get lease" not in ready.stdout + ready.stderr
    assert "HolderIdentity:  node-1" in ready.stdout
    assert "HolderIdentity:  node-4" in kubectl(demo, "describe", "node", "node-4").stdout
    leases = {lease["metadata"]["name"]: lease for lease in demo.sim.store.all("leases", "kube-node-lease")}
    assert sorted(leases) == sorted(n["metadata"]["name"] for n in demo.sim.store.all("nodes"))
    stale = dt.datetime.now(dt.UTC) - dt.datetime.strptime(leases["node-4"]["spec"]["renewTime"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    assert stale > dt.timedelta(days=2)  # the demo's NotReady node stopped renewing when it stopped posting status
    # A Ready node's kubelet renews once a quarter of the lease duration has passed; a NotReady one's does not.
    old = "2026-01-01T00:00:00.000000Z"
    for name in ("node-1", "node-4"):
        lease = demo.sim.store.get("leases", "kube-node-lease", name)
        demo.sim.store.put("leases", {**lease, "spec": {**lease["spec"], "renewTime": old}})
    demo.tick()
    assert demo.sim.store.get("leases", "kube-node-lease", "node-1")["spec"]["renewTime"] > "2026-01-02"
    assert demo.sim.store.get("leases", "kube-node-lease", "node-4")["spec"]["renewTime"] == old


MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27{extra}
"""


def manifest(tmp_path: Path, name: str, **values: object) -> str:
    path = tmp_path / name
    path.write_text(MANIFEST.format(**{"replicas": 2, "extra": "", **values}))
    return str(path)


def test_it_validates_create_and_apply_with_the_openapi_documents_kubectl_downloads(demo: Sandbox, tmp_path: Path) -> None:
    # Validation on (kubectl's default): kubectl reads /openapi/v3, sees the server validates fields
    # and sends fieldValidation=Strict; a field the schema does not declare is refused, naming it.
    typo = manifest(tmp_path, "typo.yaml", extra="\n        imagePullPolic: Always")
    for verb in ("create", "apply"):
        refused = kubectl(demo, verb, "-f", typo, ok=False)
        assert refused.returncode == 1
        assert 'strict decoding error: unknown field "spec.template.spec.containers[0].imagePullPolic"' in refused.stderr
    assert demo.sim.store.get("deployments", "shop", "web") is None
    assert "deployment.apps/web created" in kubectl(demo, "create", "-f", manifest(tmp_path, "web.yaml")).stdout
    kubectl(demo, "delete", "deployment", "web", "-n", "shop")
    assert "deployment.apps/web created" in kubectl(demo, "apply", "-f", manifest(tmp_path, "web.yaml")).stdout
    assert "deployment.apps/web configured" in kubectl(demo, "apply", "-f", manifest(tmp_path, "web.yaml", replicas=4)).stdout
    assert kubectl(demo, "get", "deploy", "web", "-n", "shop", "-o", "jsonpath={.status.readyReplicas}").stdout == "4"
    # --validate=warn: the server stores the object and kubectl prints its warning.
    warned = kubectl(demo, "apply", "--validate=warn", "-f", typo)
    assert 'Warning: unknown field "spec.template.spec.containers[0].imagePullPolic"' in warned.stderr


def test_it_explains_the_kinds_it_serves(demo: Sandbox) -> None:
    out = kubectl(demo, "explain", "deployment.spec").stdout
    assert "GROUP:      apps" in out and "FIELD: spec <DeploymentSpec>" in out
    assert "Number of desired pods." in out  # replicas' description, from the schema
    assert "selector\t<LabelSelector> -required-" in out and "template\t<PodTemplateSpec> -required-" in out
    containers = kubectl(demo, "explain", "pods.spec.containers.resources.limits").stdout
    assert "FIELD: limits <map[string]string>" in containers
    assert "KIND:       Lease" in kubectl(demo, "explain", "leases").stdout
    missing = kubectl(demo, "explain", "deployment.spec.nope", ok=False)
    assert missing.returncode == 1 and 'field "nope" does not exist' in missing.stderr


def test_it_keeps_configmaps_and_secrets_kubectl_creates(demo: Sandbox, tmp_path: Path) -> None:
    # kubectl sends both as protobuf; a Secret's stringData is folded into data, base64, as the API server does.
    assert "configmap/app created" in kubectl(demo, "create", "configmap", "app", "-n", "shop", "--from-literal=mode=fast").stdout
    assert "secret/db created" in kubectl(demo, "create", "secret", "generic", "db", "-n", "shop", "--from-literal=password=s3cr3t").stdout
    assert kubectl(demo, "get", "cm", "app", "-n", "shop", "-o", "jsonpath={.data.mode}").stdout == "fast"
    assert kubectl(demo, "get", "secret", "db", "-n", "shop", "-o", "jsonpath={.type} {.data.password}").stdout == "Opaque czNjcjN0"
    path = tmp_path / "token.yaml"
    path.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: token, namespace: shop}\nstringData: {token: abc}\n")
    kubectl(demo, "apply", "-f", str(path))
    stored = demo.sim.store.get("secrets", "shop", "token")
    assert stored["data"] == {"token": "YWJj"} and "stringData" not in stored
    listed = kubectl(demo, "get", "secrets", "-n", "shop").stdout
    assert "db" in listed and "Opaque" in listed and "s3cr3t" not in listed


STATEFULSET = """\
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  serviceName: db
  replicas: 3
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
      - name: db
        image: postgres:17
        resources:
          requests: {cpu: 100m, memory: 128Mi}
          limits: {memory: 256Mi}
"""


def test_it_runs_statefulsets_whose_faults_our_detectors_find(demo: Sandbox, tmp_path: Path) -> None:
    from k8s.detectors import detect

    path = tmp_path / "sts.yaml"
    path.write_text(STATEFULSET)
    assert "statefulset.apps/db created" in kubectl(demo, "apply", "-f", str(path)).stdout
    demo.tick()
    pods = kubectl(demo, "get", "pods", "-n", "shop", "-l", "app=db", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.phase} {end}").stdout
    assert pods.split() == ["db-0=Running", "db-1=Running", "db-2=Running"]
    assert kubectl(demo, "get", "sts", "db", "-n", "shop", "-o", "jsonpath={.status.readyReplicas}").stdout == "3"
    kubectl(demo, "scale", "sts", "db", "-n", "shop", "--replicas=2")  # the highest ordinal goes
    assert sorted(p["metadata"]["name"] for p in demo.sim.store.all("pods", "shop") if p["metadata"]["name"].startswith("db-")) == ["db-0", "db-1"]

    def findings() -> set[tuple[str, str]]:
        store = demo.sim.store
        return {(f.type, f.workload_key()) for f in detect(store.all("pods"), store.all("nodes"), store.all("deployments"),
                                                             store.all("replicasets"), store.all("horizontalpodautoscalers"),
                                                             store.all("jobs")) if f.namespace == "shop" and f.owner_name == "db"}

    demo.fault("crash_loop", "shop/db", transient=False)
    demo.tick(3)
    assert ("crash_loop", "StatefulSet/shop/db") in findings()
    demo.clear("shop/db")
    demo.fault("oom_killed", "shop/db", need="400Mi")
    demo.tick(3)
    assert ("oom_killed", "StatefulSet/shop/db") in findings()
    # metrics-server's view: the OOM-killed container is at its 256Mi limit.
    top = kubectl(demo, "top", "pod", "db-0", "-n", "shop").stdout
    assert top.splitlines()[1].split()[2] == "256Mi"


def test_kubectl_top_reads_node_and_pod_metrics(demo: Sandbox) -> None:
    pods = kubectl(demo, "top", "pods", "-A").stdout.splitlines()
    assert pods[0].split() == ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    running = [p for p in demo.sim.store.all("pods") if p["status"].get("phase") == "Running" and p["spec"].get("nodeName") != "node-4"]
    assert len(pods) - 1 == len(running)  # every running pod on a Ready node; node-4's kubelet cannot be scraped
    assert all(line.split()[2].endswith("m") and line.split()[3].endswith("Mi") for line in pods[1:])
    nodes = {line.split()[0]: line.split()[1:] for line in kubectl(demo, "top", "nodes").stdout.splitlines()[1:]}
    assert set(nodes) == {"node-1", "node-2", "node-3", "node-4"}
    assert nodes["node-4"][0] == "<unknown>" and nodes["node-1"][1].endswith("%")


def test_server_side_apply_records_managers_and_refuses_conflicts(demo: Sandbox, tmp_path: Path) -> None:
    labelled = manifest(tmp_path, "v1.yaml")
    Path(labelled).write_text(MANIFEST.format(replicas=2, extra="").replace("  namespace: shop\n", "  namespace: shop\n  labels: {tier: web}\n"))
    assert "deployment.apps/web serverside-applied" in kubectl(demo, "apply", "--server-side", "-f", labelled).stdout
    managed = demo.sim.store.get("deployments", "shop", "web")["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"]) for m in managed] == [("kubectl", "Apply")]
    assert "k:{\"name\":\"web\"}" in managed[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    kubectl(demo, "patch", "deployment", "web", "-n", "shop", "--subresource=scale", "--type=merge",
            "-p", '{"spec":{"replicas":5}}', "--field-manager=autoscaler")
    conflict = kubectl(demo, "apply", "--server-side", "-f", manifest(tmp_path, "v2.yaml", replicas=3), ok=False)
    assert conflict.returncode == 1
    assert 'conflict with "autoscaler" with subresource "scale" using apps/v1: .spec.replicas' in conflict.stderr
    # Forced: the field is taken over; the label no longer in the configuration is removed.
    kubectl(demo, "apply", "--server-side", "--force-conflicts", "-f", manifest(tmp_path, "v2.yaml", replicas=3))
    web = demo.sim.store.get("deployments", "shop", "web")
    assert web["spec"]["replicas"] == 3 and "tier" not in (web["metadata"].get("labels") or {})
    assert {m["manager"] for m in web["metadata"]["managedFields"]} == {"kubectl"}
