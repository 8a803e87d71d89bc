"""Metrics of the Kubernetes MCP server process (aggregated by Django's /metrics in multiprocess mode)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CALLS = Counter(
    "aiops_mcp_server_calls_total",
    "Tool calls the Kubernetes MCP server answered, by tool and outcome (ok, error, invalid, refused).",
    ["tool", "outcome"],
)
CALL_DURATION = Histogram(
    "aiops_mcp_server_call_duration_seconds",
    "Time the Kubernetes MCP server spent on a tool call, by tool.",
    ["tool"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
