"""Metrics of the `watch` process: its streams, re-lists and detector passes, per cluster."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WATCH_EVENTS = Counter(
    "aiops_watcher_events_total",
    "Watch events received, by cluster, kind (pods, nodes, ...) and type (ADDED, MODIFIED, DELETED, BOOKMARK).",
    ["cluster", "kind", "type"],
)
WATCH_RELISTS = Counter(
    "aiops_watcher_relists_total",
    "Full lists of a kind by the watcher, by cluster, kind and reason (start; gone: 410, the version was too old).",
    ["cluster", "kind", "reason"],
)
WATCH_STREAM_ERRORS = Counter(
    "aiops_watcher_stream_errors_total",
    "Watch streams that failed (refused, cut, timed out) and were retried with back-off, by cluster and kind.",
    ["cluster", "kind"],
)
WATCH_PASSES = Counter(
    "aiops_watcher_detector_passes_total",
    "Workloads the watcher ran the detectors on (one per workload per coalescing window), by cluster.",
    ["cluster"],
)
WATCH_OBJECTS = Gauge(
    "aiops_watcher_objects",
    "Slim objects the watcher holds for a cluster, by kind.",
    ["cluster", "kind"],
    multiprocess_mode="livemax",
)
WATCH_MARK_TO_PASS = Histogram(
    "aiops_watcher_mark_to_pass_seconds",
    "From an event marking a workload to the detector pass over it (the coalescing wait), by cluster.",
    ["cluster"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WATCH_INGEST_SECONDS = Histogram(
    "aiops_watcher_ingest_seconds",
    "One hand-over of a detector pass's findings to the incident service (locks, writes, commit), by cluster.",
    ["cluster"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
