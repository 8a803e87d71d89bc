"""The risk gate in call_tool, against a real third-party MCP server over stdio (the SDK's own
client and server), real PostgreSQL and the real registry: issue 5's "Checked by" cases."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from agents.models import Approval, AuditEntry, MCPTool
from agents.registry import sync_server
from agents.services import ToolRefused, call_tool, decide_approval, request_approval

pytestmark = pytest.mark.integration


def _approved(tool: str, args: dict, approvers, **kwargs) -> Approval:  # type: ignore[no-untyped-def]
    approval = request_approval(tool, args, reason="test", origin="playbook", **kwargs)
    return decide_approval(approval.pk, approvers.alice, "approve", "ok")


def _refusals(tool: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(tool=tool, action=AuditEntry.Action.TOOL_REFUSED).order_by("id"))


def test_it_registers_third_party_tools_as_high_until_an_admin_lowers_them(fake_mcp) -> None:  # type: ignore[no-untyped-def]
    tools = {t.remote_name: t for t in fake_mcp.tools.all()}
    assert set(tools) == {"echo", "set_value", "big_output", "fail", "pid", "sleep"}
    assert {t.risk for t in tools.values()} == {"HIGH"}
    assert tools["echo"].name == "fake__echo"

    echo = tools["echo"]
    echo.risk = "LOW"
    echo.save()  # as the admin form does
    sync_server(fake_mcp)
    echo.refresh_from_db()
    assert echo.risk == "LOW" and echo.risk_set_by_admin


def test_it_runs_a_low_tool_at_once_and_audits_it(fake_mcp) -> None:  # type: ignore[no-untyped-def]
    MCPTool.objects.filter(name="fake__echo").update(risk="LOW")
    result = call_tool("fake__echo", {"text": "hello"}, actor="tester", reason="look")
    assert result.ok and result.output == "hello" and not result.truncated
    entry = AuditEntry.objects.get(pk=result.audit_id)
    assert (entry.actor, entry.action, entry.outcome, entry.server) == ("tester", "tool_call", "ok", "fake")
    assert entry.duration_ms is not None and entry.arguments == {"text": "hello"}


def test_it_refuses_a_high_tool_without_an_approval(fake_mcp, fake_calls) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ToolRefused, match="HIGH risk: it needs an approved approval"):
        call_tool("fake__set_value", {"key": "no-approval", "value": "1"}, actor="llm:alice", reason="try")
    assert fake_calls("no-approval") == 0
    [entry] = _refusals("fake__set_value")
    assert entry.outcome == "refused" and entry.detail.startswith("no_approval") and entry.actor == "llm:alice"


def test_it_refuses_an_approval_for_other_arguments(fake_mcp, fake_calls, approvers) -> None:  # type: ignore[no-untyped-def]
    approval = _approved("fake__set_value", {"key": "other-args", "value": "1"}, approvers)
    with pytest.raises(ToolRefused, match="other arguments"):
        call_tool("fake__set_value", {"key": "other-args", "value": "2"}, actor="x", reason="y", approval=approval)
    with pytest.raises(ToolRefused, match="for fake__set_value with other arguments"):
        call_tool("fake__echo", {"text": "1"}, actor="x", reason="y", approval=approval)
    assert fake_calls("other-args") == 0
    assert [e.detail.split(":")[0] for e in _refusals("fake__set_value")] == ["mismatch"]


def test_an_approval_binds_canonical_arguments_whatever_the_key_order(fake_mcp, fake_calls, approvers) -> None:  # type: ignore[no-untyped-def]
    approval = _approved("fake__set_value", {"key": "order", "value": "1"}, approvers)
    result = call_tool("fake__set_value", {"value": "1", "key": "order"}, actor="x", reason="y", approval=approval)
    assert result.ok and fake_calls("order") == 1


def test_it_refuses_pending_rejected_and_expired_approvals(fake_mcp, fake_calls, approvers) -> None:  # type: ignore[no-untyped-def]
    args = {"key": "states", "value": "1"}
    pending = request_approval("fake__set_value", args, reason="r", origin="playbook")
    with pytest.raises(ToolRefused, match="is pending, not approved"):
        call_tool("fake__set_value", args, actor="x", reason="y", approval=pending)
    rejected = request_approval("fake__set_value", args, reason="r", origin="playbook")
    decide_approval(rejected.pk, approvers.bob, "reject", "no")
    with pytest.raises(ToolRefused, match="is rejected, not approved"):
        call_tool("fake__set_value", args, actor="x", reason="y", approval=rejected)
    expired = _approved("fake__set_value", args, approvers)
    Approval.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ToolRefused, match="expired at .* unused"):
        call_tool("fake__set_value", args, actor="x", reason="y", approval=expired)
    assert fake_calls("states") == 0
    assert [e.detail.split(":")[0] for e in _refusals("fake__set_value")] == ["not_approved", "not_approved", "expired"]


def test_a_valid_approval_runs_once_and_only_its_first_callers_key_may_retry(fake_mcp, fake_calls, approvers) -> None:  # type: ignore[no-untyped-def]
    args = {"key": "once", "value": "1"}
    approval = _approved("fake__set_value", args, approvers)
    first = call_tool("fake__set_value", args, actor="playbook:7", reason="fix", approval=approval,
                      idempotency_key="steprun:7")
    assert first.ok and first.output == "set once=1" and fake_calls("once") == 1
    approval.refresh_from_db()
    assert approval.used_key == "steprun:7" and approval.used_at is not None

    with pytest.raises(ToolRefused, match="already used by another call"):
        call_tool("fake__set_value", args, actor="chat:mallory", reason="replay", approval=approval,
                  idempotency_key="chat:999")
    with pytest.raises(ToolRefused, match="already used"):
        call_tool("fake__set_value", args, actor="chat:mallory", reason="replay", approval=approval)
    assert fake_calls("once") == 1

    # A crashed worker's retry (same key) completes the action; the tool is idempotent in effect.
    retry = call_tool("fake__set_value", args, actor="playbook:7", reason="fix", approval=approval,
                      idempotency_key="steprun:7")
    assert retry.ok
    assert AuditEntry.objects.filter(approval=approval, action="tool_call", outcome="ok").count() == 2
    assert [e.detail.split(":")[0] for e in _refusals("fake__set_value")] == ["used", "used"]


def test_a_call_without_a_key_uses_its_approval_up(fake_mcp, fake_calls, approvers) -> None:  # type: ignore[no-untyped-def]
    args = {"key": "nokey", "value": "1"}
    approval = _approved("fake__set_value", args, approvers)
    assert call_tool("fake__set_value", args, actor="x", reason="y", approval=approval).ok
    with pytest.raises(ToolRefused, match="already used"):
        call_tool("fake__set_value", args, actor="x", reason="y", approval=approval)
    assert fake_calls("nokey") == 1


@pytest.mark.django_db(transaction=True)
def test_two_callers_racing_for_one_approval_run_the_tool_once(fake_mcp, fake_calls, approvers) -> None:  # type: ignore[no-untyped-def]
    args = {"key": "race", "value": "1"}
    approval = _approved("fake__set_value", args, approvers)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def caller(n: int) -> None:
        try:
            barrier.wait()
            call_tool("fake__set_value", args, actor=f"caller-{n}", reason="race", approval=approval.pk,
                      idempotency_key=f"key-{n}")
            outcomes.append("ran")
        except ToolRefused:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["ran", "refused", "refused", "refused"]
    assert fake_calls("race") == 1


def test_it_validates_arguments_against_the_schema_before_sending(fake_mcp, fake_calls, approvers) -> None:  # type: ignore[no-untyped-def]
    MCPTool.objects.filter(name="fake__echo").update(risk="LOW")
    result = call_tool("fake__echo", {"text": 5}, actor="x", reason="y")
    assert not result.ok and "arguments for fake__echo are invalid at text: 5 is not of type 'string'" in result.output
    assert AuditEntry.objects.get(pk=result.audit_id).outcome == "invalid"
    result = call_tool("fake__echo", ["not", "an", "object"], actor="x", reason="y")  # type: ignore[arg-type]
    assert not result.ok and "must be a JSON object" in result.output


def test_a_tool_error_is_not_ok_and_not_retried(fake_mcp) -> None:  # type: ignore[no-untyped-def]
    MCPTool.objects.filter(name="fake__fail").update(risk="LOW")
    result = call_tool("fake__fail", {"message": "disk on fire"}, actor="x", reason="y")
    assert not result.ok and "disk on fire" in result.output
    assert AuditEntry.objects.get(pk=result.audit_id).outcome == "error"


def test_it_caps_output_and_says_so(fake_mcp, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_MCP_OUTPUT_LIMIT = 1024
    MCPTool.objects.filter(name="fake__big_output").update(risk="LOW")
    result = call_tool("fake__big_output", {"size": 5000}, actor="x", reason="y")
    assert result.ok and result.truncated
    assert result.output.startswith("x" * 1024)
    assert result.output.endswith("[output truncated: 3976 of 5000 bytes cut]")


def test_it_refuses_unknown_tools_and_everything_mutating_in_read_only_mode(fake_mcp, approvers, settings) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ToolRefused, match="no enabled tool named 'rm_rf'"):
        call_tool("rm_rf", {}, actor="llm", reason="?")
    approval = _approved("fake__set_value", {"key": "ro", "value": "1"}, approvers)
    settings.AIOPS_READ_ONLY = True
    with pytest.raises(ToolRefused, match="AIOPS_READ_ONLY is on"):
        call_tool("fake__set_value", {"key": "ro", "value": "1"}, actor="x", reason="y", approval=approval)
    assert AuditEntry.objects.filter(action="tool_refused", tool="rm_rf").exists()


def test_sessions_stay_open_and_reopen_after_the_server_dies(fake_mcp) -> None:  # type: ignore[no-untyped-def]
    import os
    import signal

    MCPTool.objects.filter(name="fake__pid").update(risk="LOW")
    first = call_tool("fake__pid", {}, actor="x", reason="y").data["result"]
    assert call_tool("fake__pid", {}, actor="x", reason="y").data["result"] == first  # the session was kept
    os.kill(first, signal.SIGKILL)  # the server dies between two calls
    second = call_tool("fake__pid", {}, actor="x", reason="y")
    assert second.ok and second.data["result"] != first  # reopened on a fresh process, the call went through


def test_the_audit_log_is_append_only(fake_mcp) -> None:  # type: ignore[no-untyped-def]
    MCPTool.objects.filter(name="fake__echo").update(risk="LOW")
    entry = AuditEntry.objects.get(pk=call_tool("fake__echo", {"text": "a"}, actor="x", reason="y").audit_id)
    entry.outcome = "rewritten"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        AuditEntry.objects.filter(pk=entry.pk).update(outcome="rewritten")
    with pytest.raises(PermissionError):
        AuditEntry.objects.filter(pk=entry.pk).delete()
    from django.db import DatabaseError, transaction

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE agents_auditentry SET outcome = 'rewritten' WHERE id = %s", [entry.pk])
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM agents_auditentry WHERE id = %s", [entry.pk])
    entry.refresh_from_db()
    assert entry.outcome == "ok"


def test_calls_refusals_and_approvals_move_the_metrics(fake_mcp, approvers) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    MCPTool.objects.filter(name="fake__echo").update(risk="LOW")
    before = (value("aiops_tool_calls_total", server="fake", tool="fake__echo", outcome="ok"),
              value("aiops_tool_gate_refusals_total", tool="fake__set_value", reason="no_approval"),
              value("aiops_approvals_total", state="approved"),
              value("aiops_tool_call_duration_seconds_count", server="fake", tool="fake__echo"))
    call_tool("fake__echo", {"text": "m"}, actor="x", reason="y")
    with pytest.raises(ToolRefused):
        call_tool("fake__set_value", {"key": "m", "value": "1"}, actor="x", reason="y")
    _approved("fake__set_value", {"key": "m", "value": "1"}, approvers)
    after = (value("aiops_tool_calls_total", server="fake", tool="fake__echo", outcome="ok"),
             value("aiops_tool_gate_refusals_total", tool="fake__set_value", reason="no_approval"),
             value("aiops_approvals_total", state="approved"),
             value("aiops_tool_call_duration_seconds_count", server="fake", tool="fake__echo"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1]


@pytest.mark.django_db(transaction=True)
def test_the_call_tool_task_runs_in_the_worker_and_reports_refusals(fake_mcp, fake_calls, approvers,
                                                                    celery_worker) -> None:  # type: ignore[no-untyped-def]
    from agents.tasks import call_tool_task

    args = {"key": "task", "value": "1"}
    refused = call_tool_task.delay("fake__set_value", args, "chat:carol", "try").get(timeout=30)
    assert refused["refused"] and "needs an approved approval" in refused["output"]
    approval = _approved("fake__set_value", args, approvers)
    done = call_tool_task.delay("fake__set_value", args, "playbook:9", "fix", approval.pk, "steprun:9").get(timeout=30)
    assert done == {"ok": True, "refused": False, "output": "set task=1", "data": {"result": "set task=1"}, "truncated": False,
                    "audit_id": done["audit_id"]}
    assert fake_calls("task") == 1
    assert AuditEntry.objects.get(pk=done["audit_id"]).idempotency_key == "steprun:9"


def test_a_call_that_outlives_its_timeout_is_cut_and_audited(fake_mcp) -> None:  # type: ignore[no-untyped-def]
    from agents.mcp_client import MCPTimeout

    MCPTool.objects.filter(name="fake__sleep").update(risk="LOW")
    fake_mcp.timeout = 1.0
    fake_mcp.save(update_fields=["timeout"])
    MCPTool.objects.filter(name="fake__echo").update(risk="LOW")
    assert call_tool("fake__echo", {"text": "open"}, actor="x", reason="y").ok  # the session is open
    from prometheus_client import REGISTRY

    def transport_errors() -> float:
        return REGISTRY.get_sample_value("aiops_mcp_transport_errors_total", {"server": fake_mcp.name}) or 0.0

    before = transport_errors()
    with pytest.raises(MCPTimeout, match="no answer within 1 s"):
        call_tool("fake__sleep", {"seconds": 5}, actor="x", reason="y")
    assert transport_errors() == before + 1  # a timeout is a failure below the tool: operators see it
    entry = AuditEntry.objects.filter(tool="fake__sleep").latest("id")
    assert entry.outcome == "timeout" and entry.duration_ms >= 1000
