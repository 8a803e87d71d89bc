"""Prometheus metrics of the chat channels (see README: Chat channels)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES_SENT = Counter(
    "aiops_chat_messages_sent_total", "Outbox messages (and edits) delivered, by platform.", ["platform", "operation"]
)
MESSAGES_FAILED = Counter(
    "aiops_chat_messages_failed_total",
    "Outbox messages given up on (permanent error or attempts exhausted), by platform.",
    ["platform", "reason"],
)
DELIVERY_RETRIES = Counter(
    "aiops_chat_delivery_retries_total",
    "Delivery attempts that failed and were rescheduled, by platform and cause.",
    ["platform", "cause"],  # rate_limited | unavailable
)
DELIVERY_LATENCY = Histogram(
    "aiops_chat_delivery_seconds",
    "Seconds from an outbox row's creation to its delivery.",
    ["platform"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
INBOUND_WEBHOOKS = Counter(
    "aiops_chat_inbound_webhooks_total",
    "Inbound webhook requests by platform and outcome.",
    ["platform", "outcome"],  # accepted | duplicate | unauthorized | bad_request | disabled
)
APPROVAL_CLICKS = Counter(
    "aiops_chat_approval_decisions_total",
    "Approval decisions made from chat (buttons or typed), by platform and outcome.",
    ["platform", "outcome"],  # approved | rejected | refused | already_decided | unknown_user
)
COMMANDS = Counter("aiops_chat_commands_total", "Chat commands routed, by command.", ["command"])
FOLDED = Counter(
    "aiops_chat_family_revisions_total",
    "Parent incident messages revised because a correlated child was linked or resolved, by how "
    "(rewritten while queued, edit_queued, edit_rewritten).",
    ["how"],
)
STORMS = Counter("aiops_chat_storms_total", "Incident storms detected (more than AIOPS_STORM_THRESHOLD incidents in AIOPS_STORM_WINDOW s on one cluster).")
STORM_HELD_BACK = Counter(
    "aiops_chat_storm_held_back_total",
    "Incident messages not sent on their own during a storm (non-critical, counted in the storm summary).",
)
DIGEST_ENTRIES = Counter("aiops_chat_digest_entries_total", "Info-level messages held for a digest target.")
DIGESTS_SENT = Counter("aiops_chat_digests_sent_total", "Digest messages queued (one per target per interval with entries).")
