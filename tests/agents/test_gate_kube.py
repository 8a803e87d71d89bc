"""End to end: call_tool -> the registry -> our Kubernetes MCP server over streamable HTTP (bearer
token from the environment) -> the sandbox, with the gate in front of every change."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from mcp import Client, StdioServerParameters

from agents.models import AuditEntry
from agents.services import ToolRefused, call_tool, decide_approval, request_approval
from tests.conftest import ROOT, worker_env

pytestmark = pytest.mark.integration


def replicas(kubeconfig: str, namespace: str, name: str) -> str:
    return subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "get", "deploy", name, "-n", namespace, "-o",
                           "jsonpath={.spec.replicas}"], capture_output=True, text=True, check=True).stdout


def test_a_scale_runs_only_through_an_approval_and_is_audited(kube_tools, kube_mcp, sandbox, approvers) -> None:  # type: ignore[no-untyped-def]
    sandbox.reset("demo")
    try:
        listed = call_tool("list_deployments", {"namespace": "shop"}, actor="playbook:1", reason="look")
        assert listed.ok and {d["name"] for d in listed.data["deployments"]} >= {"frontend", "cart", "checkout"}

        args = {"namespace": "shop", "name": "frontend", "replicas": 4}
        with pytest.raises(ToolRefused, match="scale_deployment is MEDIUM risk"):
            call_tool("scale_deployment", args, actor="llm:alice", reason="load")
        assert replicas(kube_mcp.kubeconfig, "shop", "frontend") == "3"

        approval = request_approval("scale_deployment", args, reason="load", origin="playbook", origin_ref="steprun:5")
        decide_approval(approval.code, approvers.bob, "approve")
        result = call_tool("scale_deployment", args, actor="playbook:5", reason="load", approval=approval,
                           idempotency_key="steprun:5")
        assert result.ok and result.output == "scaled deployment shop/frontend from 3 to 4 replicas"
        assert replicas(kube_mcp.kubeconfig, "shop", "frontend") == "4"
        entry = AuditEntry.objects.get(pk=result.audit_id)
        assert (entry.server, entry.tool, entry.risk, entry.outcome, entry.approval_id) == (
            "kubernetes", "scale_deployment", "MEDIUM", "ok", approval.pk)

        # A tool error from our server is ok=False, never a success carrying an error text.
        failed = call_tool("describe_pod", {"namespace": "shop", "name": "ghost"}, actor="x", reason="y")
        assert not failed.ok and failed.output == "describe_pod: pod shop/ghost not found"
    finally:
        sandbox.reset("demo")


@pytest.mark.django_db(transaction=True)
def test_the_cluster_argument_names_a_registered_cluster(sandbox_cluster) -> None:  # type: ignore[no-untyped-def]
    async def run() -> list[tuple[bool, str]]:
        params = StdioServerParameters(command=sys.executable, args=["-m", "k8s.mcp_server", "--django", "--read-only"],
                                       cwd=str(ROOT), env=worker_env())
        async with Client(params) as client:
            answers = []
            for args in ({}, {"cluster": "sandbox"}, {"cluster": "elsewhere"}):
                result = await client.call_tool("list_namespaces", args)
                answers.append((result.is_error, result.content[0].text))
            return answers

    default, named, unknown = asyncio.run(run())
    assert not default[0] and '"shop"' in default[1]
    assert named == default
    assert unknown == (True, "list_namespaces: no enabled cluster named 'elsewhere' is registered (clusters: sandbox)")
