"""Writes deploy/grafana/dashboards/aiops-agent.json, the dashboard Grafana provisions.

The JSON is generated so that panels stay uniform and every query is in one readable list;
a test checks the committed file equals this script's output and that every metric a query
names is defined in the code. Run: `python deploy/grafana/dashboard.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "aiops-agent.json"
DATASOURCE = {"type": "prometheus", "uid": "aiops-prometheus"}

# (row title, [(panel title, panel type, unit, [(expr, legend)], description)])
ROWS: list[tuple[str, list[tuple[str, str, str, list[tuple[str, str]], str]]]] = [
    (
        "Clusters and incidents",
        [
            ("Open incidents by type", "timeseries", "short",
             [("max by (type) (aiops_incidents_open)", "{{type}}")],
             "Open incidents, by primary finding type (or alertname), counted in PostgreSQL at scrape time."),
            ("Polls failing in a row", "timeseries", "short",
             [("max by (cluster) (aiops_cluster_poll_consecutive_failures)", "{{cluster}}")],
             "Consecutive failed polls per enabled cluster (AIOpsClusterPollFailing fires at 3)."),
            ("Since last successful poll", "stat", "s",
             [("time() - max by (cluster) (aiops_cluster_last_poll_success_timestamp_seconds)", "{{cluster}}")],
             "Seconds since each cluster's last successful poll (AIOpsClusterPollStale fires at 5 minutes)."),
            ("Poll duration p95 by cluster", "timeseries", "s",
             [("histogram_quantile(0.95, sum by (le, cluster) (rate(aiops_watch_poll_duration_seconds_bucket[$__rate_interval])))",
               "{{cluster}}")],
             "95th percentile wall time of a successful poll: list calls, detectors, ingest."),
            ("Polls by outcome", "timeseries", "short",
             [("sum by (cluster, outcome) (increase(aiops_watch_polls_total[$__rate_interval]))",
               "{{cluster}} {{outcome}}")],
             "Cluster polls: ok, unreachable, skipped (locked, back-off), error."),
            ("Findings by type", "timeseries", "short",
             [("sum by (type) (increase(aiops_watch_findings_total[$__rate_interval]))", "{{type}}")],
             "Findings the detectors report, counted every poll while they last."),
            ("Incidents opened and resolved", "timeseries", "short",
             [("sum by (type) (increase(aiops_incidents_opened_total[$__rate_interval]))", "opened {{type}}"),
              ("sum by (type) (increase(aiops_incidents_resolved_total[$__rate_interval]))", "resolved {{type}}")],
             "Incidents opened and resolved, by primary type (poll and Alertmanager)."),
        ],
    ),
    (
        "Playbooks",
        [
            ("Runs finished by outcome", "timeseries", "short",
             [("sum by (outcome) (increase(aiops_playbook_runs_finished_total[$__rate_interval]))", "{{outcome}}")],
             "Playbook runs finishing, by outcome (resolved, mitigated, fix_did_not_hold, rejected, ...)."),
            ("Runs started", "timeseries", "short",
             [("sum by (playbook, mode) (increase(aiops_playbook_runs_started_total[$__rate_interval]))",
               "{{playbook}} ({{mode}})")],
             "Runs created by rule matches, started at once (auto) or proposed."),
            ("Step latency p95 by tool", "timeseries", "s",
             [("histogram_quantile(0.95, sum by (le, tool) (rate(aiops_playbook_step_duration_seconds_bucket[$__rate_interval])))",
               "{{tool}}")],
             "95th percentile of one step's run time in the worker, by tool."),
            ("Steps by state", "timeseries", "short",
             [("sum by (state) (increase(aiops_playbook_steps_total[$__rate_interval]))", "{{state}}")],
             "Step executions ending in each state."),
        ],
    ),
    (
        "Approvals and tools",
        [
            ("Approvals pending", "stat", "short",
             [("max(aiops_approvals_pending)", "pending")],
             "Approvals waiting for a decision and not yet expired (AIOpsApprovalsPilingUp fires above 5)."),
            ("Approvals by state", "timeseries", "short",
             [("sum by (state) (increase(aiops_approvals_total[$__rate_interval]))", "{{state}}")],
             "Approvals requested (pending), approved, rejected and expired."),
            ("MCP tool calls by outcome", "timeseries", "short",
             [("sum by (server, tool, outcome) (increase(aiops_tool_calls_total[$__rate_interval]))",
               "{{server}}/{{tool}} {{outcome}}")],
             "Tool calls through the risk gate, by server, tool and outcome."),
            ("Gate refusals", "timeseries", "short",
             [("sum by (tool, reason) (increase(aiops_tool_gate_refusals_total[$__rate_interval]))",
               "{{tool}}: {{reason}}")],
             "Calls the risk gate refused, and why."),
            ("Tool call latency p95", "timeseries", "s",
             [("histogram_quantile(0.95, sum by (le, tool) (rate(aiops_tool_call_duration_seconds_bucket[$__rate_interval])))",
               "{{tool}}")],
             "95th percentile of MCP tool call time, by tool."),
            ("MCP server calls by tool and outcome", "timeseries", "short",
             [("sum by (tool, outcome) (increase(aiops_mcp_server_calls_total[$__rate_interval]))",
               "{{tool}} {{outcome}}")],
             "Tool calls the Kubernetes MCP server answered (ok, error, invalid, refused)."),
            ("MCP transport errors", "timeseries", "short",
             [("sum by (server) (increase(aiops_mcp_transport_errors_total[$__rate_interval]))", "{{server}}")],
             "MCP calls that failed below the tool: connection, protocol, timeout."),
        ],
    ),
    (
        "Chat",
        [
            ("Messages sent by platform", "timeseries", "short",
             [("sum by (platform) (increase(aiops_chat_messages_sent_total[$__rate_interval]))", "{{platform}}")],
             "Outbox messages (and edits) delivered."),
            ("Messages failed by platform", "timeseries", "short",
             [("sum by (platform, reason) (increase(aiops_chat_messages_failed_total[$__rate_interval]))",
               "{{platform}}: {{reason}}")],
             "Outbox messages given up on (AIOpsChatDeliveryFailing)."),
            ("Outbox waiting", "timeseries", "short",
             [("max by (platform, state) (aiops_chat_outbox_messages)", "{{platform}} {{state}}")],
             "Messages queued or being sent, counted in PostgreSQL at scrape time."),
            ("Inbound webhooks by platform and outcome", "timeseries", "short",
             [("sum by (platform, outcome) (increase(aiops_chat_inbound_webhooks_total[$__rate_interval]))",
               "{{platform}} {{outcome}}")],
             "Inbound chat webhooks: accepted, duplicate, unauthorized, bad_request, disabled."),
        ],
    ),
    (
        "LLM",
        [
            ("LLM calls by model and outcome", "timeseries", "short",
             [("sum by (model, outcome) (increase(aiops_llm_requests_total[$__rate_interval]))",
               "{{model}} {{outcome}}")],
             "Chat-completion calls, by model and outcome."),
            ("Tokens by model", "timeseries", "short",
             [("sum by (model, kind) (increase(aiops_llm_tokens_total[$__rate_interval]))", "{{model}} {{kind}}")],
             "Prompt and completion tokens used."),
            ("LLM latency p95 by model", "timeseries", "s",
             [("histogram_quantile(0.95, sum by (le, model) (rate(aiops_llm_latency_seconds_bucket[$__rate_interval])))",
               "{{model}}")],
             "95th percentile latency of successful LLM calls."),
            ("Circuit breaker", "stat", "short",
             [("max by (endpoint) (aiops_llm_circuit_open)", "{{endpoint}}")],
             "1 while the breaker is open and LLM calls fail fast (AIOpsLLMCircuitOpen)."),
        ],
    ),
    (
        "Celery",
        [
            ("Queue depth", "timeseries", "short",
             [("max by (queue) (aiops_celery_queue_length)", "{{queue}}")],
             "Messages waiting in each Celery queue, read from the broker at scrape time."),
            ("Tasks by outcome", "timeseries", "short",
             [("sum by (task, outcome) (increase(aiops_celery_tasks_total[$__rate_interval]))",
               "{{task}} {{outcome}}")],
             "Tasks finished, by name and final state."),
            ("Task duration p95", "timeseries", "s",
             [("histogram_quantile(0.95, sum by (le, task) (rate(aiops_celery_task_duration_seconds_bucket[$__rate_interval])))",
               "{{task}}")],
             "95th percentile of a task's run time in the worker."),
            ("Broker and database reachable", "stat", "short",
             [("min(aiops_celery_broker_up)", "broker"), ("min(aiops_database_up)", "database")],
             "1 when the web role's last scrape could read the broker / PostgreSQL."),
        ],
    ),
]


def _panel(panel_id: int, title: str, kind: str, unit: str, targets: list[tuple[str, str]], description: str,
           x: int, y: int) -> dict[str, object]:
    panel: dict[str, object] = {
        "id": panel_id,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if kind == "timeseries":
        panel["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
    else:
        panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    return panel


def build() -> dict[str, object]:
    panels: list[dict[str, object]] = []
    panel_id, y = 1, 0
    for row_title, row_panels in ROWS:
        panels.append({"id": panel_id, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        panel_id, y = panel_id + 1, y + 1
        for index, (title, kind, unit, targets, description) in enumerate(row_panels):
            x = (index % 3) * 8
            if index and index % 3 == 0:
                y += 8
            panels.append(_panel(panel_id, title, kind, unit, targets, description, x, y))
            panel_id += 1
        y += 8
    return {
        "uid": "aiops-agent",
        "title": "AIOps agent",
        "description": "The agent watching your clusters: incidents, playbooks, approvals, chat, LLM, Celery.",
        "tags": ["aiops"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
