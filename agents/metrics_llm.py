"""Prometheus metrics of the LLM client, conversations, redaction and RCA."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LLM_REQUESTS = Counter(
    "aiops_llm_requests",
    "LLM chat completion calls by model, purpose and outcome (ok, rate_limited, server_error, timeout, "
    "connection_error, client_error, circuit_open, not_configured).",
    ["model", "purpose", "outcome"],
)
LLM_RETRIES = Counter("aiops_llm_retries", "LLM requests retried after a 429, 5xx, timeout or connection error.", ["model", "reason"])
LLM_TOKENS = Counter("aiops_llm_tokens", "Tokens used, by model and kind (prompt, completion).", ["model", "kind"])
LLM_LATENCY = Histogram(
    "aiops_llm_latency_seconds",
    "Latency of successful LLM calls by model.",
    ["model"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
# mostrecent: in multiprocess mode the value any process set last is what is shown, i.e. the
# breaker state the latest caller saw (the state itself lives in Redis, shared by all).
LLM_CIRCUIT_OPEN = Gauge(
    "aiops_llm_circuit_open",
    "1 while the circuit breaker for an LLM endpoint is open (calls fail fast), else 0.",
    ["endpoint"],
    multiprocess_mode="mostrecent",
)
CHAT_ANSWERS = Counter(
    "aiops_chat_answers", "Chat answers by outcome (answered, approval_requested, llm_unavailable, error).", ["outcome"]
)
CHAT_TOOL_CALLS = Counter(
    "aiops_chat_tool_calls",
    "Tool calls the model made in chat, by outcome (ran, failed, refused, approval_requested, "
    "blocked_no_intent, unknown_tool, bad_arguments, budget_exhausted).",
    ["outcome"],
)
REDACTIONS = Counter("aiops_llm_redactions", "Values replaced by placeholders before a request left for the LLM.", ["purpose"])
RCA_REPORTS = Counter(
    "aiops_rca_reports", "RCA reports by method (llm, deterministic) and failure class.", ["method", "failure_class"]
)
RCA_FALLBACKS = Counter(
    "aiops_rca_fallbacks", "LLM RCA attempts that fell back to the deterministic report, by reason.", ["reason"]
)
LLM_CAPABILITY_FALLBACKS = Counter(
    "aiops_llm_capability_fallbacks",
    "An endpoint refused a feature and the request went on without it: feature (structured, tools) and what "
    "was used instead (json_object, prompt, no).",
    ["feature", "fallback"],
)
RCA_TOOL_CALLS = Counter(
    "aiops_rca_tool_calls",
    "Tool calls the model made while investigating an RCA, by outcome (ran, failed, refused, budget_exhausted, "
    "bad_arguments).",
    ["outcome"],
)
