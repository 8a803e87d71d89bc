"""The LLM RCA's investigation: the model calls LOW tools (through call_tool: validated, audited)
within a budget of rounds and output, and its report cites each tool result it used, checked
against the calls made. Against the strict fake in each server's mode; the sandbox and our MCP
server where a tool really runs."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from prometheus_client import REGISTRY

from agents.models import Approval, AuditEntry
from agents.rca import analyze
from agents.rca.investigate import RCA_TOOLS, WRITE_NOW
from channels.formatting import rca_report, rca_text
from tests.fakes.openai_server import Recorded, Reply, error, json_reply, text, tool_calls

pytestmark = pytest.mark.django_db

CRASHING = {
    "pod": {
        "metadata": {"name": "ledger-6f7d9-abcde", "namespace": "payments", "labels": {"app": "ledger"}},
        "spec": {"containers": [{"name": "ledger", "image": "payments/ledger:0.9.3",
                                 "resources": {"limits": {"memory": "256Mi"}}}]},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "ledger", "ready": False, "restartCount": 7, "image": "payments/ledger:0.9.3",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]},
    },
    "events": [{"reason": "BackOff", "message": "Back-off restarting failed container ledger", "count": 9}],
}
CONTEXT = {"cluster": "", "subject": "Deployment payments/ledger"}


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def report_citing(*refs: str, failure_class: str = "oom_killed") -> dict[str, Any]:
    evidence = [{"source": "tool", "ref": ref, "detail": f"what {ref} showed"} for ref in refs]
    evidence.append({"source": "status", "detail": "lastState.terminated.reason is OOMKilled"})
    return {"root_cause": "The ledger container exceeds its 256Mi memory limit and is OOM-killed.",
            "failure_class": failure_class, "confidence": 0.8, "evidence": evidence,
            "recommended_actions": [{"action": "Raise the memory limit", "playbook": "oom_kill_remediation"}],
            "related_resources": []}


@pytest.fixture
def builtin_tools(db):  # type: ignore[no-untyped-def]
    """Our tools in the registry from code; a LOW call fails (no MCP server there): audited, told to the model."""
    from agents.registry import register_builtin

    return register_builtin("http://127.0.0.1:9/mcp")


@pytest.mark.integration
def test_the_model_investigates_with_low_tools_and_cites_what_they_returned(
    sandbox_cluster, kube_tools, fake_llm, settings  # type: ignore[no-untyped-def]
) -> None:
    from agents.rca import gather_bundle

    settings.LLM_RCA_TOOL_OUTPUT_BUDGET = 1500
    bundle = gather_bundle(sandbox_cluster, {"kind": "Deployment", "namespace": "payments", "name": "ledger"})
    pod = bundle["pod"]["metadata"]["name"]
    fake_llm.script(
        tool_calls(("get_pod_logs", {"namespace": "payments", "name": pod, "previous": True, "tail": 50}),
                   ("query_prometheus", {"query": f'container_memory_working_set_bytes{{pod="{pod}"}}', "range": "1h"})),
        tool_calls(("list_events", {"namespace": "payments", "object_name": pod})),
        text("I have enough."),
        json_reply(report_citing("T1", "T3", failure_class="app_crash")),
    )
    ran_before = _metric("aiops_rca_tool_calls_total", outcome="ran")

    report = analyze(bundle, context=CONTEXT)

    assert report["method"] == "llm", report.get("fallback")
    calls = report["investigation"]["calls"]
    assert [(c["ref"], c["tool"]) for c in calls] == [("T1", "get_pod_logs"), ("T2", "query_prometheus"), ("T3", "list_events")]
    assert report["investigation"]["rounds"] == 3
    # Each call went through call_tool: validated and audited, as the RCA, on the default cluster.
    logs_audit = AuditEntry.objects.get(pk=calls[0]["audit_id"])
    assert logs_audit.tool == "get_pod_logs" and logs_audit.actor == "llm:rca" and logs_audit.outcome == "ok"
    assert logs_audit.arguments == {"namespace": "payments", "name": pod, "previous": True, "tail": 50}
    assert "RCA investigation of Deployment payments/ledger" in logs_audit.reason
    # No Prometheus is configured for this server: the tool's error is audited and told to the model.
    assert calls[1]["outcome"] == "failed" and AuditEntry.objects.get(pk=calls[1]["audit_id"]).outcome == "error"
    assert _metric("aiops_rca_tool_calls_total", outcome="ran") == ran_before + 2
    # The evidence cites the calls with their tool and arguments from our record, not the model's word.
    cited = [e for e in report["evidence"] if e["source"] == "tool"]
    assert cited[0]["tool"] == "get_pod_logs" and cited[0]["arguments"]["name"] == pod
    assert cited[0]["audit_id"] == calls[0]["audit_id"] and cited[1]["tool"] == "list_events"
    # What the model was offered: the RCA's LOW tools, without the cluster argument.
    first, second, third, last = fake_llm.completions
    offered = {t["function"]["name"]: t["function"]["parameters"] for t in first.json["tools"]}
    assert set(offered) <= set(RCA_TOOLS) and "get_pod_logs" in offered and "restart_pod" not in offered
    assert all("cluster" not in p.get("properties", {}) for p in offered.values())
    tool_results = [m["content"] for m in second.messages if m["role"] == "tool"]
    assert tool_results[0].startswith('[T1] <untrusted_data source="tool:get_pod_logs">')
    assert tool_results[1].startswith('[T2] <untrusted_data source="tool:query_prometheus">')
    # The output fed back is bounded by LLM_RCA_TOOL_OUTPUT_BUDGET across the investigation.
    assert report["investigation"]["output_chars"] <= 1500
    # The model's last text was no report: it was asked for one, with structured output.
    assert last.messages[-1]["content"] == WRITE_NOW and "tools" not in last.json
    assert last.json["response_format"]["type"] == "json_schema"
    # What a person reads: the tool call behind the evidence, in words.
    shown = rca_text(rca_report(report))
    assert f"tool result (get_pod_logs(name={pod}, namespace=payments, previous=yes, tail=50))" in shown
    assert rca_report(report).method == "the LLM (gpt-4o-mini (fake-model)), after 3 tool calls"


def test_a_citation_of_a_call_never_made_is_repaired(builtin_tools, fake_llm) -> None:  # type: ignore[no-untyped-def]
    fake_llm.script(
        tool_calls(("describe_pod", {"namespace": "payments", "name": "ledger-6f7d9-abcde"})),
        json_reply(report_citing("T1", "T4")),  # its answer after the tools: cites a result it never got
        json_reply(report_citing("T1")),
    )
    report = analyze(copy.deepcopy(CRASHING), context=CONTEXT)
    assert report["method"] == "llm" and report["repaired"] is True
    assert report["investigation"]["calls"][0]["outcome"] == "failed"  # no MCP server at that URL
    repair = fake_llm.completions[2].messages[-1]["content"]
    assert "'T4'" in repair and "T1" in repair


def test_a_change_tool_is_refused_never_run_and_never_asked_for(builtin_tools, fake_llm) -> None:  # type: ignore[no-untyped-def]
    refused_before = _metric("aiops_rca_tool_calls_total", outcome="refused")
    fake_llm.script(
        tool_calls(("restart_pod", {"namespace": "payments", "name": "ledger-6f7d9-abcde"}),
                   ("request_change", {"tool": "patch_memory_limit", "arguments": {}})),
        json_reply(report_citing()),
    )
    report = analyze(copy.deepcopy(CRASHING), context=CONTEXT)
    assert report["method"] == "llm"
    assert [c["outcome"] for c in report["investigation"]["calls"]] == ["refused", "refused"]
    assert not AuditEntry.objects.filter(tool__in=["restart_pod", "patch_memory_limit"]).exists()
    assert not Approval.objects.exists()
    assert _metric("aiops_rca_tool_calls_total", outcome="refused") == refused_before + 2
    told = [m["content"] for m in fake_llm.completions[1].messages if m["role"] == "tool"]
    assert told[0].startswith("[T1] refused: restart_pod is not one of your tools")


def test_rounds_are_bounded_then_the_report_is_asked_for(builtin_tools, fake_llm, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LLM_RCA_TOOL_ROUNDS = 2

    def always_a_tool(request: Recorded) -> Reply:
        if request.json.get("tools"):
            return tool_calls(("list_events", {"namespace": "payments"}))
        return json_reply(report_citing("T2"))

    fake_llm.respond_with(always_a_tool)
    report = analyze(copy.deepcopy(CRASHING), context=CONTEXT)
    assert report["method"] == "llm" and report["investigation"]["rounds"] == 2
    assert len(fake_llm.completions) == 3  # two rounds with tools, then the report without
    assert fake_llm.completions[2].messages[-1]["content"] == WRITE_NOW


def test_without_context_the_plain_report_may_not_cite_a_tool(fake_llm) -> None:  # type: ignore[no-untyped-def]
    fake_llm.script(json_reply(report_citing("T1")), json_reply(report_citing()))
    report = analyze(copy.deepcopy(CRASHING))
    assert report["method"] == "llm" and report["repaired"] is True and "investigation" not in report
    assert "no tool was called" in fake_llm.completions[1].messages[-1]["content"]
    assert "tools" not in fake_llm.completions[0].json


def test_a_failing_provider_mid_investigation_leaves_the_deterministic_report(builtin_tools, fake_llm, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LLM_MAX_RETRIES = 0
    fake_llm.script(tool_calls(("list_events", {"namespace": "payments"})), error(503))
    report = analyze(copy.deepcopy(CRASHING), context=CONTEXT)
    assert report["method"] == "deterministic" and report["failure_class"] == "oom_killed"
    assert report["fallback"]["reason"] == "provider_error"


def _answer(request: Recorded) -> Reply:
    if any(m["role"] == "tool" for m in request.messages) or not request.json.get("tools"):
        return json_reply(report_citing(*(["T1"] if any(m["role"] == "tool" for m in request.messages) else [])))
    return tool_calls(("describe_pod", {"namespace": "payments", "name": "ledger-6f7d9-abcde"}))


@pytest.mark.parametrize(("mode", "tools_supported", "calls"), [
    ("openai", True, 1),
    ("llama-cpp-python", True, 1),  # a tool call comes back only for a named tool_choice
    ("vllm", True, 1),
    ("vllm", False, 0),  # no --enable-auto-tool-choice: 400 for "auto", the report without tools
    ("ollama", True, 1),
    ("ollama", False, 0),  # "does not support tools": the report without tools
])
def test_each_strict_server_gets_an_investigation_it_accepts(
    mode, tools_supported, calls, builtin_tools, fake_llm, settings  # type: ignore[no-untyped-def]
) -> None:
    fake_llm.mode = mode
    fake_llm.tools_supported = tools_supported
    if mode == "llama-cpp-python":
        settings.LLM_RCA_TOOL_CHOICE = "describe_pod"
    fake_llm.respond_with(_answer)
    report = analyze(copy.deepcopy(CRASHING), context=CONTEXT)
    assert report["method"] == "llm", report.get("fallback")
    assert len(report["investigation"]["calls"]) == calls
    for request in fake_llm.completions:
        assert all(m.get("content") is not None for m in request.messages)  # llama-cpp-python: 500 on null
        assert isinstance(request.json["max_tokens"], int)
    if mode == "llama-cpp-python":
        assert fake_llm.completions[0].json["tool_choice"] == {"type": "function", "function": {"name": "describe_pod"}}
    json.dumps(report)  # stored as JSON on the incident
