"""Metrics of the engine: rule matches, runs by outcome, steps by kind/state, latencies."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RULE_MATCHES = Counter(
    "aiops_playbook_rule_matches_total",
    "New incidents checked against the rules, by result (matched, no_match, cooldown, active_run, no_steps, no_cluster).",
    ["result"],
)
RUNS_STARTED = Counter(
    "aiops_playbook_runs_started_total",
    "Playbook runs created, by playbook and whether they started at once (auto) or were proposed.",
    ["playbook", "mode"],
)
RUNS_FINISHED = Counter(
    "aiops_playbook_runs_finished_total",
    "Playbook runs finished, by playbook and outcome (resolved, mitigated, fix_did_not_hold, rejected, ...).",
    ["playbook", "outcome"],
)
STEPS = Counter(
    "aiops_playbook_steps_total",
    "Step executions ending in a state (succeeded, failed, skipped, waiting_approval, rejected, ...), by kind.",
    ["kind", "state"],
)
STEP_DURATION = Histogram(
    "aiops_playbook_step_duration_seconds",
    "Wall-clock time of one step execution in the worker, by kind and tool (rca/notify/verify: the kind).",
    ["kind", "tool"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
DECISION_TO_ACTION = Histogram(
    "aiops_playbook_decision_to_action_seconds",
    "From an approval's decision to its tool call finishing, by tool.",
    ["tool"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RECONCILED = Counter(
    "aiops_playbook_steps_reconciled_total",
    "Steps the reconciler re-enqueued or repaired, by what it found (queued, running, stalled_run, decided).",
    ["found"],
)
CONDITIONS = Counter(
    "aiops_playbook_step_conditions_skipped_total",
    "Steps skipped by their `when:` condition, by why (false, error: it could not be evaluated).",
    ["result"],
)
ESCALATIONS = Counter(
    "aiops_playbook_escalations_total",
    "Actions not asked for again because they did not hold K times in the rule's window (the run handed off), by rule.",
    ["rule"],
)
