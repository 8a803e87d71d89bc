"""The agentic part of the LLM RCA: before it writes the report, the model may look further with
LOW (read-only) tools - the logs of the failing container and of what it depends on, events, the
objects around it, metrics through `query_prometheus` (memory working set before an OOM kill,
restarts over time) - within a budget of rounds and of tool output.

Every call goes through `agents.services.call_tool`, so it is validated and audited like any
other; only LOW tools of the RCA's list are offered, and a call of anything else is answered with
a refusal and never run. The cluster is the incident's: the model does not choose it (the
`cluster` argument is removed from what it is shown and set here: the incident's cluster by name,
or none for the default cluster, as the playbook steps' own tool calls do, so a server running
in-cluster, which serves no other, answers too). Each result reaches the model
as untrusted data labelled [T1], [T2] ...; the report cites a result with `"source": "tool",
"ref": "T2"`, and the citation is checked against the calls made and completed from our own record
(tool name, arguments, audit id), so a report cannot cite a call that never happened.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from django.conf import settings

from agents import llm
from agents import metrics_llm as metrics
from agents.rca.schema import ReportInvalid
from agents.redaction import Redactor

log = structlog.get_logger(__name__)

# What the RCA may use, of our server's LOW tools.
RCA_TOOLS = ("get_pod_logs", "analyze_pod_logs", "list_events", "describe_pod", "describe_deployment", "rollout_history",
             "describe_node", "get_hpa", "list_services", "query_prometheus")

INVESTIGATE_PROMPT = """
Before you answer you may look further with the read-only tools you are given: the log of the failing
container (previous=true: before its last restart), logs of what it depends on, events, the objects
around it, and metrics with query_prometheus (e.g. container_memory_working_set_bytes of the container
over the last hour before an OOM kill, or increase(kube_pod_container_status_restarts_total[1h])).
You have at most %(rounds)d rounds of tool calls. Each tool result is labelled [T1], [T2], ...
Evidence from a tool result is {"source": "tool", "ref": "T1", "detail": "the fact"}; evidence from the
bundle keeps its source. Stop calling tools when you have enough, and answer with the JSON object."""

WRITE_NOW = "Now write the report: ONE JSON object as described, citing tool results by their ref."


@dataclass
class Call:
    ref: str
    tool: str
    arguments: dict[str, Any]
    outcome: str
    audit_id: int | None = None
    chars: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "tool": self.tool, "arguments": self.arguments, "outcome": self.outcome,
                "audit_id": self.audit_id, "chars": self.chars}


@dataclass
class Investigation:
    """One RCA's tool rounds: what was offered, called and fed back."""

    cluster: str  # "" = the MCP server's default cluster
    subject: str  # "namespace/name" of the workload, for the audit's reason
    alias: str
    deadline: float
    redactor: Redactor
    calls: list[Call] = field(default_factory=list)
    rounds: int = 0
    output_used: int = 0
    tokens: int = 0
    offered: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def prepare(cls, context: Mapping[str, Any] | None, **kwargs: Any) -> Investigation | None:
        """An investigation when one is possible: a live workload to look at, LOW tools registered."""
        if context is None or not settings.LLM_RCA_INVESTIGATE:
            return None
        from agents.registry import list_tools

        tools = {t.name: t for t in list_tools(risk="LOW") if t.server.builtin and t.remote_name in RCA_TOOLS}
        if not tools:
            return None
        return cls(cluster=str(context["cluster"]), subject=str(context.get("subject") or ""), offered=tools, **kwargs)

    def definitions(self) -> list[dict[str, Any]]:
        from agents.conversations import tool_definition

        out = []
        for name, tool in self.offered.items():
            schema = json.loads(json.dumps(tool.input_schema or {}))
            (schema.get("properties") or {}).pop("cluster", None)  # ours to set, not the model's
            out.append(tool_definition(name, tool.description or name, schema))
        return out

    def run(self, messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
        """The tool rounds. Returns the conversation so far and the model's last text (maybe the report)."""
        definitions = self.definitions()
        budget_rounds = settings.LLM_RCA_TOOL_ROUNDS
        last_text = ""
        while self.rounds < budget_rounds:
            completion = llm.complete(
                messages, alias=self.alias, tools=definitions,
                tool_choice=settings.LLM_RCA_TOOL_CHOICE if self.rounds == 0 else "auto",
                purpose="rca", deadline=self.deadline, temperature=0,
            )
            self.rounds += 1
            self.tokens += completion.tokens
            last_text = completion.content or ""
            if not completion.tool_calls or completion.tools_refused:
                break
            messages = [*messages, {
                "role": "assistant",
                "content": completion.content or "",  # never null: llama-cpp-python answers 500 to it
                "tool_calls": [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                               for c in completion.tool_calls],
            }]
            for call in completion.tool_calls:
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": self._run(call)})
            last_text = ""
        log.info("rca_investigation", rounds=self.rounds, calls=len(self.calls), output_chars=self.output_used,
                 tools=[c.tool for c in self.calls])
        return messages, last_text

    def _run(self, call: Mapping[str, str]) -> str:
        from agents.conversations import untrusted
        from agents.services import ToolRefused, call_tool

        ref = f"T{len(self.calls) + 1}"
        name = call["name"]
        try:
            args = json.loads(call["arguments"] or "{}")
            if not isinstance(args, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._record(ref, name, {}, "bad_arguments", f"[{ref}] error: the arguments of {name} must be a JSON object")
        args = {k: v for k, v in self.redactor.restore_json(args).items() if k != "cluster"}
        if name not in self.offered:
            return self._record(ref, name, args, "refused",
                                f"[{ref}] refused: {name} is not one of your tools; use one of {', '.join(self.offered)}")
        remaining = settings.LLM_RCA_TOOL_OUTPUT_BUDGET - self.output_used
        if remaining <= 0:
            return self._record(ref, name, args, "budget_exhausted",
                                f"[{ref}] not run: the tool output budget is used up; write the report with what you have")
        try:
            result = call_tool(name, {**args, **({"cluster": self.cluster} if self.cluster else {})}, actor="llm:rca",
                               reason=f"RCA investigation of {self.subject}"[:500])
        except ToolRefused as exc:
            return self._record(ref, name, args, "refused", f"[{ref}] refused: {exc}", audit_id=exc.audit_id)
        except Exception as exc:  # noqa: BLE001 - the model is told, the RCA goes on
            log.warning("rca_tool_error", tool=name, error=str(exc)[:300])
            return self._record(ref, name, args, "failed", f"[{ref}] error: {name} failed: {str(exc)[:300]}")
        if result.data is not None:
            self.redactor.add_names_from(result.data)
        output = (result.output or "")[:remaining]
        self.output_used += len(output)
        shown = output
        if len(result.output or "") > remaining:
            shown += f"\n[cut: the RCA's tool output budget is {settings.LLM_RCA_TOOL_OUTPUT_BUDGET} characters]"
        prefix = "" if result.ok else "the tool reported an error:\n"
        text = f"[{ref}] " + untrusted(f"tool:{name}", prefix + self.redactor.redact(shown))
        return self._record(ref, name, args, "ran" if result.ok else "failed", text, audit_id=result.audit_id, chars=len(output))

    def _record(self, ref: str, name: str, args: dict[str, Any], outcome: str, text: str, *,
                audit_id: int | None = None, chars: int = 0) -> str:
        self.calls.append(Call(ref, name, args, outcome, audit_id, chars))
        metrics.RCA_TOOL_CALLS.labels(outcome).inc()
        return text

    def cite(self, report: dict[str, Any]) -> dict[str, Any]:
        """Check the report's tool citations against the calls made; fill each in from our record."""
        by_ref = {c.ref: c for c in self.calls}
        for index, item in enumerate(report.get("evidence") or []):
            if item.get("source") != "tool":
                continue
            call = by_ref.get(str(item.get("ref") or ""))
            if call is None:
                made = ", ".join(by_ref) or "none"
                raise ReportInvalid(f"evidence/{index} cites tool result {item.get('ref')!r}, but the results are: {made}")
            item.update(tool=call.tool, arguments=call.arguments, audit_id=call.audit_id)
        report["investigation"] = {"rounds": self.rounds, "output_chars": self.output_used,
                                   "calls": [c.as_dict() for c in self.calls]}
        return report
