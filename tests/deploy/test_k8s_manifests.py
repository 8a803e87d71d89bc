"""The Kubernetes manifests: they render, every field is a real field, RBAC is exactly what the
tools and the poll use, the read-only overlay cannot write, and the pods are locked down."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s.mcp_server.tools import TOOL_SPECS, Permission, ToolSpec
from tests.deploy.manifests import (
    K8S_DIR,
    OVERLAYS,
    POLL_READS,
    READ_VERBS,
    containers,
    find,
    granted_to_agent,
    kubectl,
    kubectl_problem,
    load_typed,
    pod_specs,
    rbac_mismatch,
    render,
    required_permissions,
    unknown_fields,
)

pytestmark = pytest.mark.skipif(kubectl_problem() is not None, reason=str(kubectl_problem()))


@pytest.fixture(scope="module")
def with_ingress(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], ...]:
    """The default overlay plus the optional Ingress and NetworkPolicy components, as a user would compose them."""
    overlay = tmp_path_factory.mktemp("overlay")
    # kustomize refuses absolute paths in a kustomization; relative ones may leave its root.
    base = os.path.relpath(K8S_DIR / "overlays" / "default", overlay)
    components = [os.path.relpath(K8S_DIR / "components" / name, overlay) for name in ("ingress", "network-policy")]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [base], "components": components,
        # The README's "your image in an overlay of your own".
        "images": [{"name": "aiops-agent", "newName": "registry.example.com/aiops-agent", "newTag": "1.2.3"}],
    }))
    return render(str(overlay))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_it_renders_every_part_of_the_agent(overlay: str) -> None:
    objects = render(overlay)
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    for expected in [
        ("Namespace", "aiops"),
        ("ServiceAccount", "aiops-agent"),
        ("ServiceAccount", "aiops-app"),
        ("ClusterRole", "aiops-agent-read"),
        ("ConfigMap", "aiops-config"),
        ("Job", "aiops-migrate"),
        ("Deployment", "aiops-web"),
        ("Deployment", "aiops-worker"),
        ("Deployment", "aiops-beat"),
        ("Deployment", "aiops-watch"),
        ("Deployment", "aiops-flower"),
        ("Service", "aiops-web"),
        ("Service", "aiops-flower"),
        ("PodDisruptionBudget", "aiops-web"),
        ("PodDisruptionBudget", "aiops-worker"),
    ]:
        assert expected in kinds, f"{overlay}: {expected} not rendered"
    assert all(obj["metadata"].get("namespace") == "aiops" for obj in objects if obj["kind"] not in (
        "Namespace", "ClusterRole", "ClusterRoleBinding"))


@pytest.mark.parametrize("target", [*OVERLAYS, "ingress"])
def test_every_rendered_object_loads_into_the_typed_models_with_no_unknown_field(
    target: str, with_ingress: tuple[dict[str, Any], ...]
) -> None:
    objects = with_ingress if target == "ingress" else render(target)
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        typed = load_typed(obj)  # raises on a missing required field or a wrong type
        assert typed.metadata.name == obj["metadata"]["name"]
        assert unknown_fields(obj, type(typed).__name__) == [], name
    if target == "ingress":
        assert find(objects, "Ingress", "aiops-web")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {
            "name": "aiops-web", "port": {"name": "http"}}
        assert find(objects, "ConfigMap", "aiops-config")["data"]["AIOPS_BEHIND_TLS_PROXY"] == "true"
        policies = {obj["metadata"]["name"]: obj["spec"] for obj in objects if obj["kind"] == "NetworkPolicy"}
        assert policies["aiops-default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
        opened = {port["port"] for spec in policies.values() for rule in spec.get("ingress", []) for port in rule["ports"]}
        assert opened == {8000, 9100, 9101, 5555}, "the MCP port (8765) must never be opened"
        images = {c["image"] for _, spec in pod_specs(objects) for c in containers(spec)}
        assert images == {"registry.example.com/aiops-agent:1.2.3"}


def test_the_strict_check_catches_a_misspelt_field() -> None:
    deployment = find(render("default"), "Deployment", "aiops-web")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = broken["spec"]["template"]["spec"][
        "containers"][0].pop("readinessProbe")
    broken["spec"]["template"]["spec"]["securityContext"]["runAsNonroot"] = True
    assert sorted(unknown_fields(broken, "V1Deployment")) == [
        ".spec.template.spec.containers[0].readinesProbe: not a field of V1Container",
        ".spec.template.spec.securityContext.runAsNonroot: not a field of V1PodSecurityContext",
    ]


def test_the_cluster_role_grants_exactly_what_the_tools_and_the_poll_use() -> None:
    needed = required_permissions(TOOL_SPECS)
    assert rbac_mismatch(granted_to_agent(render("default")), needed) == []


def test_a_tool_without_its_rbac_fails_the_comparison() -> None:
    specs = dict(TOOL_SPECS)
    specs["suspend_cronjob"] = ToolSpec(
        name="suspend_cronjob", risk="MEDIUM", description="", input_schema={},
        rbac=(Permission("batch", "cronjobs", ("get", "patch")),),
    )
    problems = rbac_mismatch(granted_to_agent(render("default")), required_permissions(specs))
    assert problems == [
        "missing get batch/cronjobs (needed by suspend_cronjob)",
        "missing patch batch/cronjobs (needed by suspend_cronjob)",
    ]
    del specs["suspend_cronjob"], specs["scale_deployment"]
    # Still needed by the other deployment tools, so nothing becomes excess.
    assert rbac_mismatch(granted_to_agent(render("default")), required_permissions(specs)) == []


def test_the_read_only_overlay_has_no_write_verb_and_refuses_changes() -> None:
    objects = render("read-only")
    for role in (obj for obj in objects if obj["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            assert set(rule["verbs"]) <= READ_VERBS, f"{role['metadata']['name']} grants {rule['verbs']}"
    reads = {triple: who for triple, who in required_permissions(TOOL_SPECS).items() if triple[2] in READ_VERBS}
    assert rbac_mismatch(granted_to_agent(objects), reads) == []
    assert find(objects, "ConfigMap", "aiops-config")["data"]["AIOPS_READ_ONLY"] == "true"
    mcp = next(c for c in find(objects, "Deployment", "aiops-worker")["spec"]["template"]["spec"]["containers"]
               if c["name"] == "mcp")
    assert mcp["args"] == ["mcp", "--read-only"]
    # And the default overlay really can write (so the read-only one differs where it matters).
    assert find(render("default"), "ConfigMap", "aiops-config")["data"]["AIOPS_READ_ONLY"] == "false"
    assert any(verb not in READ_VERBS for _, _, verb in granted_to_agent(render("default")))


def test_the_poll_reads_are_listed_in_the_read_role() -> None:
    read_role = find(render("read-only"), "ClusterRole", "aiops-agent-read")
    granted = {(g, r, v) for rule in read_role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    assert POLL_READS <= granted


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_locked_down(overlay: str) -> None:
    for name, spec in pod_specs(render(overlay)):
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in containers(spec):
            where = f"{name} {container['name']}"
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, where
            assert container["resources"]["limits"]["memory"], where
            # The root filesystem is read-only: /tmp (metrics files) must be an emptyDir.
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, where  # noqa: S108
        # Only the worker pod (worker + MCP sidecar) and the watcher (read and watch only) hold a token.
        if name == "Deployment/aiops-worker":
            assert spec["serviceAccountName"] == "aiops-agent" and spec["automountServiceAccountToken"] is True
        elif name == "Deployment/aiops-watch":
            assert spec["serviceAccountName"] == "aiops-watch" and spec["automountServiceAccountToken"] is True
        else:
            assert spec["serviceAccountName"] == "aiops-app" and spec["automountServiceAccountToken"] is False, name


def test_the_mcp_server_is_a_loopback_sidecar_of_the_worker_only() -> None:
    objects = render("default")
    worker = find(objects, "Deployment", "aiops-worker")["spec"]["template"]["spec"]
    mcp = next(c for c in worker["containers"] if c["name"] == "mcp")
    env = {e["name"]: e for e in mcp["env"]}
    assert mcp["args"][0] == "mcp"  # the entrypoint role that binds 127.0.0.1 only
    assert mcp["ports"] == [{"name": "metrics-mcp", "containerPort": 9101}], "only its metrics are exposed"
    assert env["AIOPS_MCP_PORT"]["value"] == "8765"
    assert env["AIOPS_MCP_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "aiops-secrets", "key": "AIOPS_MCP_TOKEN"}
    assert find(objects, "ConfigMap", "aiops-config")["data"]["AIOPS_MCP_URL"] == "http://127.0.0.1:8765/mcp"
    for name, spec in pod_specs(objects):
        if name != "Deployment/aiops-worker":
            assert all(c["args"][0] != "mcp" for c in containers(spec)), name
            names = {e["name"] for c in containers(spec) for e in c.get("env", [])}
            assert "AIOPS_MCP_TOKEN" not in names, f"{name} does not need the MCP token"


def test_probes_beat_and_budgets() -> None:
    objects = render("default")
    web = find(objects, "Deployment", "aiops-web")["spec"]["template"]["spec"]["containers"][0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/health"
    assert web["readinessProbe"]["httpGet"]["path"] == "/ready"
    # The Host header is one AIOPS_ALLOWED_HOSTS accepts, or Django would answer the probe 400.
    allowed = find(objects, "ConfigMap", "aiops-config")["data"]["AIOPS_ALLOWED_HOSTS"].split(",")
    assert web["readinessProbe"]["httpGet"]["httpHeaders"] == [{"name": "Host", "value": "localhost"}]
    assert "localhost" in allowed
    beat = find(objects, "Deployment", "aiops-beat")["spec"]
    assert beat["replicas"] == 1 and beat["strategy"] == {"type": "Recreate"}
    budgets = {obj["metadata"]["name"] for obj in objects if obj["kind"] == "PodDisruptionBudget"}
    assert budgets == {"aiops-web", "aiops-worker"}
    job = find(objects, "Job", "aiops-migrate")["spec"]
    assert job["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert job["ttlSecondsAfterFinished"] > 0


def test_every_secret_reference_is_a_setting_of_the_same_name() -> None:
    """`kubectl create secret generic aiops-secrets --from-env-file=...` then just works."""
    from django.conf import settings

    for name, spec in pod_specs(render("default")):
        for container in containers(spec):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "aiops-secrets" and ref["key"] == env["name"], f"{name}: {env}"
                    assert env["name"] in ("DATABASE_URL", "REDIS_URL", "AIOPS_SECRET_KEY", "FLOWER_BASIC_AUTH") or hasattr(
                        settings, env["name"]
                    ), f"{name}: {env['name']} is not a setting"


def test_kubectl_reports_a_broken_overlay_clearly(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    result = subprocess.run([kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "missing.yaml" in result.stderr
