"""Our Kubernetes MCP server, driven by the official `mcp` client over stdio and streamable
HTTP against the sandbox cluster, with every effect checked through `kubectl`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from agents.mcp_client import ClientManager, ServerConfig
from k8s.mcp_server.tools import TOOL_SPECS
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def kubectl(kubeconfig: str, *args: str) -> str:
    result = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def over_http(server, operation: Callable[[Client], Awaitable[Any]], token: str | None = None) -> Any:  # type: ignore[no-untyped-def]
    async def run() -> Any:
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {token or server.token}"}) as http:
            async with Client(streamable_http_client(server.url, http_client=http)) as client:
                return await operation(client)

    return asyncio.run(run())


def over_stdio(args: list[str], operation: Callable[[Client], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        params = StdioServerParameters(command=sys.executable, args=["-m", "k8s.mcp_server", *args], cwd=str(ROOT))
        async with Client(params) as client:
            return await operation(client)

    return asyncio.run(run())


_manager = ClientManager()  # one open session for the module, like a worker process keeps


def call(server, tool: str, **args: Any) -> tuple[bool, str]:  # type: ignore[no-untyped-def]
    config = ServerConfig(name="kube-test", transport="streamable-http", url=server.url, timeout=30,
                          headers=(("Authorization", f"Bearer {server.token}"),))
    result = _manager.call_tool(config, tool, args)
    return not result.is_error, result.text


def ok(server, tool: str, **args: Any) -> Any:  # type: ignore[no-untyped-def]
    success, text = call(server, tool, **args)
    assert success, text
    return json.loads(text) if text[:1] in "{[" else text


def sandbox_requests() -> float:
    from k8s.sandbox.metrics import SANDBOX_REQUESTS

    return sum(s.value for m in SANDBOX_REQUESTS.collect() for s in m.samples if s.name.endswith("_total"))


@pytest.fixture
def fresh_sandbox(sandbox):  # type: ignore[no-untyped-def]
    """Mutating tests leave the shared sandbox as they found it."""
    sandbox.reset("demo")
    yield sandbox
    sandbox.reset("demo")


def test_it_lists_every_tool_over_http_with_its_risk_and_hints(kube_mcp) -> None:  # type: ignore[no-untyped-def]
    tools = over_http(kube_mcp, lambda client: client.list_tools())
    listed = {tool.name: tool for tool in tools.tools}
    assert set(listed) == set(TOOL_SPECS)
    for name, spec in TOOL_SPECS.items():
        tool = listed[name]
        assert tool.input_schema == spec.input_schema
        assert tool.meta == {"aiops/risk": spec.risk, "aiops/verbs": spec.verbs, "aiops/resources": spec.resources}
        assert tool.annotations.read_only_hint is (spec.risk == "LOW")
        assert tool.annotations.destructive_hint is (spec.risk == "HIGH")
        assert tool.annotations.idempotent_hint is True


def test_http_without_the_bearer_token_is_refused(kube_mcp) -> None:  # type: ignore[no-untyped-def]
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": kube_mcp.token}):
        response = httpx.post(kube_mcp.url, json=body, headers={**headers, "Accept": "application/json, text/event-stream"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    with pytest.raises(Exception) as refused:  # noqa: B017  (the SDK wraps the 401 in a group)
        over_http(kube_mcp, lambda client: client.list_tools(), token="wrong")
    assert "Server returned an error response" in repr(refused.value)  # the 401 above, through the SDK


def test_stdio_read_only_serves_low_tools_and_refuses_the_rest(sandbox) -> None:  # type: ignore[no-untyped-def]
    async def operation(client: Client) -> Any:
        tools = await client.list_tools()
        pods = await client.call_tool("list_pods", {"namespace": "shop"})
        restart = await client.call_tool("restart_pod", {"namespace": "shop", "name": "x"})
        return tools, pods, restart

    tools, pods, restart = over_stdio(["--kubeconfig", str(sandbox.kubeconfig), "--read-only"], operation)
    assert {t.name for t in tools.tools} == {n for n, s in TOOL_SPECS.items() if s.risk == "LOW"}
    assert not pods.is_error and json.loads(pods.content[0].text)["count"] == len(
        kubectl(str(sandbox.kubeconfig), "get", "pods", "-n", "shop", "--no-headers").splitlines())
    assert restart.is_error and restart.content[0].text == "restart_pod is not served in read-only mode"


def test_injection_attempts_are_refused_before_any_api_call(kube_mcp, sandbox) -> None:  # type: ignore[no-untyped-def]
    cases = [
        ("describe_pod", {"namespace": "--all", "name": "web"}, "namespace '--all' is not a valid Kubernetes name"),
        ("describe_pod", {"namespace": "shop", "name": "a;b"}, "name 'a;b' is not a valid Kubernetes name"),
        ("restart_pod", {"namespace": "shop", "name": "../x"}, "name '../x' is not a valid Kubernetes name"),
        ("delete_pod_force", {"namespace": "shop", "name": "*"}, "name '*' is not a valid Kubernetes name"),
        ("cordon_node", {"name": ""}, "name '' is not a valid Kubernetes name"),
        ("drain_node", {"name": "n" * 300}, "is not a valid Kubernetes name (DNS-1123 subdomain"),
        ("scale_deployment", {"namespace": "shop", "name": "web", "replicas": "3"}, "replicas: '3' is not of type 'integer'"),
        ("scale_deployment", {"namespace": "shop", "name": "web", "replicas": 3, "extra": 1}, "Additional properties"),
        ("list_pods", {"namespace": "shop", "label_selector": "app=web;rm"}, "does not match"),
        ("get_pod_logs", {"namespace": ["shop"], "name": "x"}, "namespace must be a string, not list"),
        ("list_pods", {"cluster": "Prod!"}, "cluster 'Prod!' is not a valid Kubernetes name"),
    ]
    call(kube_mcp, "list_namespaces")  # the session is open: what follows is only the refused calls
    before = sandbox_requests()
    for tool, args, expected in cases:
        success, text = call(kube_mcp, tool, **args)
        assert not success, (tool, text)
        assert expected in text, (tool, text)
    assert sandbox_requests() == before  # not one request reached the cluster


def test_low_tools_read_the_sandbox(kube_mcp, sandbox) -> None:  # type: ignore[no-untyped-def]
    kc = str(sandbox.kubeconfig)
    sandbox.reset("demo")
    problems = ok(kube_mcp, "list_pods", problems_only=True)
    crashing = {p["name"]: p for p in problems["pods"]}
    builder = next(p for p in crashing.values() if p["name"].startswith("report-builder"))
    assert builder["reason"] == "CrashLoopBackOff" and builder["last_termination"]["exit_code"] == 137
    assert all(p["problem"] for p in problems["pods"])
    assert ok(kube_mcp, "list_pods", namespace="shop", label_selector="app.kubernetes.io/name=frontend")["count"] == 3

    described = ok(kube_mcp, "describe_pod", namespace="data", name=builder["name"])
    assert described["summary"]["owner"].startswith("ReplicaSet/report-builder")
    logs = ok(kube_mcp, "get_pod_logs", namespace="data", name=builder["name"], tail=50)
    assert logs.strip() and logs.strip() == kubectl(kc, "logs", "-n", "data", builder["name"], "--tail", "50").strip()
    analysis = ok(kube_mcp, "analyze_pod_logs", namespace="data", name=builder["name"])
    assert analysis["last_exit_code"] == 137 and "137" in analysis["exit_code_explanation"]

    nodes = ok(kube_mcp, "list_nodes")
    assert {n["name"]: n["ready"] for n in nodes["nodes"]}["node-4"] is False
    node = ok(kube_mcp, "describe_node", name="node-1")
    assert node["capacity"] and {p["name"] for p in node["pods"]} == set(
        kubectl(kc, "get", "pods", "-A", "--field-selector", "spec.nodeName=node-1", "-o",
                "jsonpath={.items[*].metadata.name}").split())
    deployments = {d["name"]: d for d in ok(kube_mcp, "list_deployments", namespace="shop")["deployments"]}
    assert deployments["frontend"]["replicas"] == 3
    assert ok(kube_mcp, "describe_deployment", namespace="shop", name="frontend")["summary"]["ready"] == 3
    history = ok(kube_mcp, "rollout_history", namespace="shop", name="checkout")
    assert [r["revision"] for r in history["revisions"]] == [1, 2, 3] and history["current_revision"] == 3
    assert ok(kube_mcp, "rollout_status", namespace="shop", name="frontend")["state"] == "complete"
    assert ok(kube_mcp, "list_events", namespace="data")["count"] >= 0
    assert {"shop", "data", "payments"} <= {n["name"] for n in ok(kube_mcp, "list_namespaces")["namespaces"]}
    assert ok(kube_mcp, "list_services", namespace="shop")["count"] == len(
        kubectl(kc, "get", "svc", "-n", "shop", "--no-headers").splitlines())
    assert ok(kube_mcp, "get_hpa", namespace="shop", name="cart")["max_replicas"] == 6

    success, text = call(kube_mcp, "list_pods", namespace="nope")
    assert not success and text == "list_pods: namespace 'nope' does not exist"
    success, text = call(kube_mcp, "describe_pod", namespace="shop", name="ghost")
    assert not success and text == "describe_pod: pod shop/ghost not found"


def test_medium_tools_change_the_cluster_once(kube_mcp, fresh_sandbox) -> None:  # type: ignore[no-untyped-def]
    kc = str(fresh_sandbox.kubeconfig)
    pod = kubectl(kc, "get", "pods", "-n", "shop", "-l", "app.kubernetes.io/name=frontend", "-o", "jsonpath={.items[0].metadata.name}")
    assert ok(kube_mcp, "restart_pod", namespace="shop", name=pod).startswith(f"deleted pod shop/{pod}")
    assert pod not in kubectl(kc, "get", "pods", "-n", "shop", "-o", "name")
    assert "already gone; nothing to do" in ok(kube_mcp, "restart_pod", namespace="shop", name=pod)
    assert len(kubectl(kc, "get", "pods", "-n", "shop", "-l", "app.kubernetes.io/name=frontend", "--no-headers").splitlines()) == 3

    stamp = "2026-11-23T10:00:00Z"
    ok(kube_mcp, "restart_deployment", namespace="shop", name="frontend", restarted_at=stamp)
    assert kubectl(kc, "get", "deploy", "frontend", "-n", "shop", "-o",
                   "jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}") == stamp
    assert "nothing to do" in ok(kube_mcp, "restart_deployment", namespace="shop", name="frontend", restarted_at=stamp)

    # The whole workload, whatever its kind; the token makes a retry a no-op.
    for kind, ns, name, short in (("Deployment", "shop", "cart", "deploy"), ("DaemonSet", "monitoring", "node-exporter", "ds")):
        assert ok(kube_mcp, "restart_workload", namespace=ns, kind=kind, name=name, restarted_at=stamp) == (
            f"restarted {kind} {ns}/{name} (restartedAt={stamp}); its controller replaces every pod")
        assert kubectl(kc, "get", short, name, "-n", ns, "-o",
                       "jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}") == stamp
        assert "was already restarted" in ok(kube_mcp, "restart_workload", namespace=ns, kind=kind, name=name,
                                             restarted_at=stamp)
    success, text = call(kube_mcp, "restart_workload", namespace="shop", kind="CronJob", name="cart")
    assert not success and "kind" in text and "CronJob" in text
    success, text = call(kube_mcp, "restart_workload", namespace="shop", kind="StatefulSet", name="cart")
    assert not success and "StatefulSet shop/cart not found" in text

    assert ok(kube_mcp, "scale_deployment", namespace="shop", name="frontend", replicas=5) == \
        "scaled deployment shop/frontend from 3 to 5 replicas"
    assert kubectl(kc, "get", "deploy", "frontend", "-n", "shop", "-o", "jsonpath={.spec.replicas}") == "5"
    assert "already has 5 replicas" in ok(kube_mcp, "scale_deployment", namespace="shop", name="frontend", replicas=5)
    success, text = call(kube_mcp, "scale_deployment", namespace="shop", name="frontend", replicas=21)
    assert not success and "above the configured maximum of 20 (AIOPS_MAX_SCALE_REPLICAS)" in text

    ok(kube_mcp, "set_hpa_max_replicas", namespace="shop", name="cart", max_replicas=10)
    assert kubectl(kc, "get", "hpa", "cart", "-n", "shop", "-o", "jsonpath={.spec.maxReplicas}") == "10"
    success, text = call(kube_mcp, "set_hpa_max_replicas", namespace="shop", name="cart", max_replicas=1)
    assert not success and "below the HPA's minReplicas=2" in text

    assert ok(kube_mcp, "cordon_node", name="node-2") == "cordoned node node-2"
    assert kubectl(kc, "get", "node", "node-2", "-o", "jsonpath={.spec.unschedulable}") == "true"
    assert "already cordoned" in ok(kube_mcp, "cordon_node", name="node-2")
    assert ok(kube_mcp, "uncordon_node", name="node-2") == "uncordoned node node-2"
    assert kubectl(kc, "get", "node", "node-2", "-o", "jsonpath={.spec.unschedulable}") in ("", "false")


def test_high_tools_change_the_cluster_within_their_bounds(kube_mcp, fresh_sandbox) -> None:  # type: ignore[no-untyped-def]
    kc = str(fresh_sandbox.kubeconfig)
    drained = ok(kube_mcp, "drain_node", name="node-2")
    assert drained["cordon"] == "cordoned node node-2"
    assert any(s.startswith("monitoring/node-exporter") and "DaemonSet" in s for s in drained["skipped"])
    assert drained["evicted"]
    left = kubectl(kc, "get", "pods", "-A", "--field-selector", "spec.nodeName=node-2", "-o",
                   "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{'\\n'}{end}").split()
    assert left and all(p.startswith("monitoring/node-exporter") for p in left)

    # A PodDisruptionBudget (payments-api: minAvailable 1, one healthy pod, on node-1) is honoured.
    success, text = call(kube_mcp, "drain_node", name="node-1")
    assert not success and "1 pod(s) blocked by a PodDisruptionBudget; the node stays cordoned" in text
    assert "payments/payments-api" in text
    assert kubectl(kc, "get", "pods", "-n", "payments", "-l", "app.kubernetes.io/name=payments-api",
                   "--field-selector", "spec.nodeName=node-1", "--no-headers").strip()

    before = kubectl(kc, "get", "deploy", "checkout", "-n", "shop", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
    history = ok(kube_mcp, "rollout_history", namespace="shop", name="checkout")
    previous = next(r for r in history["revisions"] if r["revision"] == 2)["images"][0]
    assert previous != before
    assert ok(kube_mcp, "rollback_deployment", namespace="shop", name="checkout", revision=2).startswith(
        "rolled deployment shop/checkout back to revision 2")
    assert kubectl(kc, "get", "deploy", "checkout", "-n", "shop", "-o",
                   "jsonpath={.spec.template.spec.containers[0].image}") == previous
    assert "nothing to do" in ok(kube_mcp, "rollback_deployment", namespace="shop", name="checkout", revision=2)
    success, text = call(kube_mcp, "rollback_deployment", namespace="shop", name="checkout", revision=9)
    assert not success and "has no revision 9 (revisions: " in text

    builder = kubectl(kc, "get", "pods", "-n", "data", "-l", "app.kubernetes.io/name=report-builder", "-o",
                      "jsonpath={.items[0].metadata.name}")
    success, text = call(kube_mcp, "patch_memory_limit", namespace="data", pod=builder, memory="1Gi")
    assert not success and "outside the allowed range (0, 2 x 256Mi]" in text
    assert ok(kube_mcp, "patch_memory_limit", namespace="data", pod=builder, memory="512Mi") == (
        "set memory limit of report-builder in Deployment data/report-builder from 256Mi to 512Mi")
    assert kubectl(kc, "get", "deploy", "report-builder", "-n", "data", "-o",
                   "jsonpath={.spec.template.spec.containers[0].resources.limits.memory}") == "512Mi"
    assert "nothing to do" in ok(kube_mcp, "patch_memory_limit", namespace="data", name="report-builder", memory="512Mi")
    # A DaemonSet's limit, within the same bound.
    assert ok(kube_mcp, "patch_memory_limit", namespace="monitoring", kind="DaemonSet", name="node-exporter",
              memory="256Mi") == "set memory limit of node-exporter in DaemonSet monitoring/node-exporter from 128Mi to 256Mi"
    assert kubectl(kc, "get", "ds", "node-exporter", "-n", "monitoring", "-o",
                   "jsonpath={.spec.template.spec.containers[0].resources.limits.memory}") == "256Mi"
    success, text = call(kube_mcp, "patch_memory_limit", namespace="monitoring", kind="DaemonSet", name="node-exporter",
                         memory="1Gi")
    assert not success and "outside the allowed range (0, 2 x 256Mi]" in text

    victim = kubectl(kc, "get", "pods", "-n", "shop", "-l", "app.kubernetes.io/name=cart", "-o", "jsonpath={.items[0].metadata.name}")
    assert ok(kube_mcp, "delete_pod_force", namespace="shop", name=victim) == f"force-deleted pod shop/{victim}"
    assert victim not in kubectl(kc, "get", "pods", "-n", "shop", "-o", "name")
    assert "already gone" in ok(kube_mcp, "delete_pod_force", namespace="shop", name=victim)


def test_bad_start_up_options_are_named_before_serving() -> None:
    cases = [
        ({"AIOPS_MAX_SCALE_REPLICAS": "lots"}, [], "AIOPS_MAX_SCALE_REPLICAS='lots' is not a number"),
        ({"AIOPS_MCP_TOKEN": "t"}, ["--http", "--host", "0.0.0.0"], "--host '0.0.0.0' is not a loopback address"),  # noqa: S104
    ]
    for env, args, message in cases:
        result = subprocess.run([sys.executable, "-m", "k8s.mcp_server", *args], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, env={**os.environ, **env})
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
