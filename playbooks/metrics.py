"""Metrics of the watch loop: polls, unreachable clusters, incidents, Alertmanager deliveries."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

POLLS = Counter(
    "aiops_watch_polls_total",
    "Cluster polls by cluster and outcome (ok, unreachable, skipped_locked, skipped_backoff, error).",
    ["cluster", "outcome"],
)
POLL_DURATION = Histogram(
    "aiops_watch_poll_duration_seconds",
    "Wall time of one successful poll (list calls, detectors, ingest), by cluster.",
    ["cluster"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
)
POLL_OBJECTS = Gauge(
    "aiops_watch_poll_objects",
    "Objects seen by the last poll of a cluster, by kind (pods, nodes, deployments, ...).",
    ["cluster", "kind"],
    multiprocess_mode="livemax",
)
FINDINGS = Counter(
    "aiops_watch_findings_total",
    "Findings reported by the detectors, by type (counted every poll while they last).",
    ["type"],
)
INCIDENTS_OPENED = Counter(
    "aiops_incidents_opened_total", "Incidents opened, by source (poll, watch, alertmanager) and primary type.", ["source", "type"]
)
INCIDENTS_RESOLVED = Counter(
    "aiops_incidents_resolved_total", "Incidents resolved, by source and primary type.", ["source", "type"]
)
ANNOUNCE_DELAY = Histogram(
    "aiops_incident_announce_delay_seconds",
    "From an alert batch opening an incident to its announcement (rules, notifications), by path: "
    "task (after the batch's commit), sweep (the task was lost), resolve (resolved before it).",
    ["path"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
ALERTS_RECEIVED = Counter(
    "aiops_alertmanager_alerts_total",
    "Alerts received on the Alertmanager webhook, by status (firing, resolved) and outcome (stored, duplicate).",
    ["status", "outcome"],
)
WEBHOOK_REJECTED = Counter(
    "aiops_alertmanager_rejected_total",
    "Alertmanager deliveries refused, by reason (disabled, unauthorized, invalid).",
    ["reason"],
)

from playbooks import metrics_engine  # noqa: E402,F401  (the engine room's metrics)

INCIDENTS_CORRELATED = Counter(
    "aiops_incidents_correlated_total",
    "Incidents linked as children of the incident whose cause explains them, by cause (not_ready_node, bad_rollout, alert).",
    ["cause"],
)
RUNS_DEFERRED = Counter(
    "aiops_runs_deferred_to_parent_total",
    "Playbook runs of child incidents held back because the parent incident's run was active.",
)

from playbooks import metrics_quiet  # noqa: E402,F401  (silences and maintenance windows)
