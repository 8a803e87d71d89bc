"""Metrics of the tools room: tool calls, the risk gate's refusals, approvals, MCP sessions."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TOOL_CALLS = Counter(
    "aiops_tool_calls_total",
    "MCP tool calls through call_tool, by server, tool and outcome (ok, error, refused, invalid, unavailable, timeout).",
    ["server", "tool", "outcome"],
)
TOOL_CALL_DURATION = Histogram(
    "aiops_tool_call_duration_seconds",
    "Wall-clock time of an MCP tool call that reached its server, by server and tool.",
    ["server", "tool"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
GATE_REFUSALS = Counter(
    "aiops_tool_gate_refusals_total",
    "Calls the risk gate refused, by tool and why (no_approval, mismatch, not_approved, expired, used, ...).",
    ["tool", "reason"],
)
APPROVALS = Counter(
    "aiops_approvals_total",
    "Approvals entering a state: pending (requested), approved, rejected, expired, cancelled (incident closed).",
    ["state"],
)
APPROVAL_DECISIONS_REFUSED = Counter(
    "aiops_approval_decisions_refused_total",
    "Approval decisions refused (not an approver, requester on HIGH, already decided, expired, ...).",
    ["reason"],
)
MCP_SESSIONS_OPENED = Counter(
    "aiops_mcp_sessions_opened_total",
    "MCP client sessions opened by this process's client manager, by server (a reopen after a failure counts).",
    ["server"],
)
MCP_TRANSPORT_ERRORS = Counter(
    "aiops_mcp_transport_errors_total",
    "MCP calls that failed below the tool (connection, protocol, timeout), by server.",
    ["server"],
)
UNFINISHED_CALLS_RESOLVED = Counter(
    "aiops_tool_calls_unfinished_resolved_total",
    "Mutating calls a dead worker left started, completed as unknown (by the retry or the reconciler), by tool and "
    "the effect found (changed, unchanged, unknown).",
    ["tool", "effect"],
)
