"""A third-party MCP server no one here wrote, against the sandbox: npm's `kubernetes-mcp-server`
(a Go binary, stdio), registered like any admin-configured server and called through our own
client manager and risk gate. Before issue 21 it saw an empty cluster (its access review got
404) and its create tool failed (no server-side apply)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.models import MCPServer
from agents.registry import import_mcp_config, sync_server
from agents.services import call_tool, decide_approval, request_approval
from k8s.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent.parent
BINARY = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "kubernetes-mcp-server"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not BINARY.exists(), reason="kubernetes-mcp-server is not installed (.ci/run installs it)"),
]


def register(sandbox: Sandbox, name: str, *flags: str) -> dict[str, object]:
    import_mcp_config({"mcpServers": {name: {
        "type": "stdio", "command": str(BINARY),
        "args": ["--kubeconfig", sandbox.kubeconfig, "--disable-multi-cluster", "--toolsets", "core", *flags]}}})
    return {t.remote_name: t for t in sync_server(MCPServer.objects.get(name=name))}


def test_its_all_namespaces_pod_list_returns_every_sandbox_pod(sandbox_cluster, sandbox: Sandbox) -> None:  # type: ignore[no-untyped-def]
    tools = register(sandbox, "kube-ro", "--read-only")
    assert "pods_list" in tools and "resources_create_or_update" not in tools  # --read-only exposes no writes
    pods_list = tools["pods_list"]
    pods_list.risk = "LOW"  # as an admin lowers a read-only tool of a server they trust (it starts HIGH)
    pods_list.save()
    result = call_tool(pods_list.name, {}, actor="test", reason="list every pod")
    assert result.ok, result.output
    pods = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in sandbox.sim.store.all("pods")}
    assert {ns for ns, _ in pods} >= {"shop", "payments", "data", "monitoring"}
    lines = [line.split() for line in result.output.splitlines() if line.strip()]
    header = next(i for i, cells in enumerate(lines) if "NAMESPACE" in cells and "NAME" in cells)
    ns_at, name_at = lines[header].index("NAMESPACE"), lines[header].index("NAME")
    rows = {(cells[ns_at], cells[name_at]) for cells in lines[header + 1:]}
    assert pods <= rows, f"missing: {sorted(pods - rows)}"


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: mcp-made, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: mcp-made}}
  template:
    metadata: {labels: {app: mcp-made}}
    spec:
      containers: [{name: app, image: "registry.example.com/shop/mcp-made:1.0", resources: {limits: {memory: 128Mi}}}]
"""


def test_with_write_access_it_creates_a_deployment_our_poll_then_sees(sandbox_cluster, sandbox: Sandbox, approvers) -> None:  # type: ignore[no-untyped-def]
    from playbooks.models import Incident
    from playbooks.services.poll import poll

    tools = register(sandbox, "kube-rw")
    create = tools["resources_create_or_update"]
    assert create.risk == "HIGH"  # a third-party write: only with an approval
    args = {"resource": DEPLOYMENT}
    approval = request_approval(create.name, args, reason="test", origin="playbook")
    decide_approval(approval.pk, approvers.alice, "approve", "ok")
    result = call_tool(create.name, args, actor="test", reason="create a deployment", approval=approval.pk)
    assert result.ok, result.output
    made = sandbox.sim.store.get("deployments", "shop", "mcp-made")
    assert made is not None and made["spec"]["replicas"] == 2
    assert [m["manager"] for m in made["metadata"]["managedFields"]] == ["kubernetes-mcp-server"]  # server-side apply
    assert len([p for p in sandbox.sim.store.all("pods", "shop") if p["metadata"]["name"].startswith("mcp-made-")]) == 2
    # The sandbox runs it like any workload: a crash loop in it is an incident our poll opens.
    sandbox.fault("crash_loop", "shop/mcp-made", transient=False)
    sandbox.tick(2)
    outcome = poll(sandbox_cluster)
    assert outcome.outcome == "ok"
    incident = Incident.objects.get(cluster=sandbox_cluster, namespace="shop", workload_name="mcp-made")
    assert "crash_loop" in incident.finding_types
