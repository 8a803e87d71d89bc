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
