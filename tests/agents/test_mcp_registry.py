"""The tool registry: our tools from code, third-party servers from the seed's .mcp-config.json
and their list_tools, `manage.py mcp`, and the admin for approvals and the audit log."""

from __future__ import annotations

import json
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from agents.models import Approval, AuditEntry, MCPServer, MCPTool
from agents.registry import list_tools, register_builtin, tool_risk
from agents.services import request_approval
from k8s.mcp_server.tools import TOOL_SPECS
from tests.plugins.mcp import FAKE_SERVER

pytestmark = pytest.mark.django_db


def test_our_tools_are_registered_from_code_without_starting_the_server(settings) -> None:
    server = register_builtin()
    assert server.builtin and server.url == settings.AIOPS_MCP_URL and server.last_error == ""
    assert server.headers == {"Authorization": "Bearer ${AIOPS_MCP_TOKEN}"}  # the secret stays in the environment
    tools = {t.name: t for t in server.tools.all()}
    assert set(tools) == set(TOOL_SPECS)
    for name, spec in TOOL_SPECS.items():
        assert (tools[name].risk, tools[name].verbs, tools[name].input_schema) == (spec.risk, spec.verbs, spec.input_schema)
    assert tool_risk("list_pods") == "LOW" and tool_risk("restart_pod") == "MEDIUM" and tool_risk("drain_node") == "HIGH"
    assert {t.name for t in list_tools("HIGH")} == {"drain_node", "rollback_deployment", "patch_memory_limit",
                                                     "delete_pod_force"}


def test_an_admin_may_raise_our_tools_risk_but_never_lower_it() -> None:
    register_builtin()
    for name, risk in (("restart_pod", "HIGH"), ("cordon_node", "LOW")):
        tool = MCPTool.objects.get(name=name)
        tool.risk = risk
        tool.save()
    register_builtin()
    assert tool_risk("restart_pod") == "HIGH"
    assert tool_risk("cordon_node") == "MEDIUM"


def test_it_imports_the_seeds_mcp_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"mcpServers": {
        "kube-ro": {"type": "stdio", "command": sys.executable, "args": [str(FAKE_SERVER)],
                    "env": {"FAKE_MCP_LOG": str(tmp_path / "log")}, "description": "read-only kube"},
        "simplePortChecker": {"type": "sse", "url": "https://mcp.simpleportchecker.com/mcp",
                              "description": "Security scanning and port checking tools"},
        "remote": {"type": "http", "url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer ${REMOTE_TOKEN}"}},
    }}
    path = tmp_path / ".mcp-config.json"
    path.write_text(json.dumps(config))
    out = StringIO()
    call_command("mcp", "import", str(path), stdout=out)
    assert out.getvalue().splitlines() == ["kube-ro: stdio", "simpleportchecker: sse", "remote: streamable-http"]
    remote = MCPServer.objects.get(name="remote")
    assert remote.headers == {"Authorization": "Bearer ${REMOTE_TOKEN}"}

    out = StringIO()
    call_command("mcp", "sync", "--server", "kube-ro", stdout=out)
    assert out.getvalue().strip() == "kube-ro: 6 tools"
    assert {t.risk for t in MCPTool.objects.filter(server__name="kube-ro")} == {"HIGH"}

    # A server whose secret is missing from the environment fails with its name, not a traceback.
    monkeypatch.delenv("REMOTE_TOKEN", raising=False)
    with pytest.raises(CommandError, match=r"remote: sync failed: .*REMOTE_TOKEN.*not set in the environment"):
        call_command("mcp", "sync", "--server", "remote")
    assert "REMOTE_TOKEN" in MCPServer.objects.get(name="remote").last_error


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"servers": {}}, 'expected {"mcpServers"'),
        ({"mcpServers": {"a": {"type": "carrier-pigeon"}}}, "mcpServers.a: unknown type 'carrier-pigeon'"),
        ({"mcpServers": {"a": {"type": "stdio"}}}, "mcpServers.a: a stdio server needs a command"),
        ({"mcpServers": {"a": {"type": "sse", "url": "ftp://x"}}}, "mcpServers.a: an sse server needs an http"),
        ({"mcpServers": {"ok": {"command": "x"}, "kubernetes": {"command": "y"}}}, "reserved for our own server"),
    ],
)
def test_a_bad_mcp_config_names_the_problem_and_writes_nothing(tmp_path: Path, config: dict, message: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace("{", r"\{")):
        call_command("mcp", "import", str(path))
    assert not MCPServer.objects.exists()


def test_sync_registers_ours_and_reports_a_broken_server_without_failing() -> None:
    MCPServer.objects.create(name="broken", transport="stdio", command="/nonexistent/mcp-server")
    out, err = StringIO(), StringIO()
    call_command("mcp", "sync", stdout=out, stderr=err)
    lines = out.getvalue().splitlines()
    assert "kubernetes: registered from code" in lines
    assert any(line.startswith("broken: failed:") for line in lines)
    assert "could not be synced" in err.getvalue()
    assert MCPTool.objects.filter(server__name="kubernetes").count() == len(TOOL_SPECS)


def test_the_admin_approves_with_a_reason_and_cannot_touch_the_audit_log(admin_client, admin_user) -> None:  # type: ignore[no-untyped-def]
    register_builtin()
    approval = request_approval("restart_pod", {"namespace": "shop", "name": "web-1"}, reason="crash loop",
                                origin="playbook")
    url = "/admin/agents/approval/"
    confirm = admin_client.post(url, {"action": "approve_selected", "_selected_action": [approval.pk]})
    assert confirm.status_code == 200 and b"You are about to <strong>approve</strong>" in confirm.content
    done = admin_client.post(url, {"action": "approve_selected", "_selected_action": [approval.pk], "apply": "1",
                                   "reason": "checked the logs"})
    assert done.status_code == 302
    approval.refresh_from_db()
    assert (approval.state, approval.decided_by, approval.decision_reason) == ("approved", admin_user,
                                                                              "checked the logs")
    entry = AuditEntry.objects.get(approval=approval, action="approval_decided")
    assert admin_client.get(f"/admin/agents/auditentry/{entry.pk}/change/").status_code == 200  # view only
    assert admin_client.post(f"/admin/agents/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get("/admin/agents/auditentry/add/").status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
    # Approving again from the admin shows the reason it was refused.
    again = admin_client.post(url, {"action": "reject_selected", "_selected_action": [approval.pk], "apply": "1",
                                    "reason": "x"}, follow=True)
    assert f"is already approved by {admin_user.username}" in again.content.decode()
    assert Approval.objects.get(pk=approval.pk).state == "approved"


@pytest.mark.django_db(transaction=True)
def test_make_run_start_up_picks_a_kept_port_and_fills_the_registry(tmp_path: Path) -> None:
    from agents.startup import mcp_port, prepare
    from tests.conftest import worker_env

    env = {k: v for k, v in worker_env().items() if k not in ("AIOPS_MCP_URL", "AIOPS_MCP_PORT")}
    prepare(tmp_path, env)
    port = int((tmp_path / "mcp_port").read_text())
    assert env["AIOPS_MCP_PORT"] == str(port) and env["AIOPS_MCP_URL"] == f"http://127.0.0.1:{port}/mcp"
    server = MCPServer.objects.get(name="kubernetes")
    assert server.url == env["AIOPS_MCP_URL"] and server.tools.count() == len(TOOL_SPECS)
    assert mcp_port(tmp_path) == port  # the same port across restarts


def test_a_secret_reference_may_name_a_setting(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """In embedded mode the MCP token lives in the run directory and reaches the settings, not
    the environment of a `manage.py shell`; the registry's ${AIOPS_MCP_TOKEN} still resolves."""
    from agents.registry import server_config

    monkeypatch.delenv("AIOPS_MCP_TOKEN", raising=False)
    settings.AIOPS_MCP_TOKEN = "from-the-run-directory"
    assert dict(server_config(register_builtin()).headers) == {"Authorization": "Bearer from-the-run-directory"}
