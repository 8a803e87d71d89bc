"""One chat completion against any OpenAI-compatible endpoint, through the `openai` SDK.

What it adds to the SDK: retries on 429 (honouring Retry-After), 5xx, timeouts and connection
errors with exponential back-off and jitter, done here so every retry is counted and the breaker
sees the outcome; a deadline that bounds every request's timeout; what each server refuses
(agents/llm/compat.py), learned once per endpoint and model; token and latency metrics.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any

import openai
import structlog
from django.conf import settings

from agents import metrics_llm as metrics
from agents.llm import compat
from agents.llm.breaker import CircuitBreaker
from agents.llm.choice import Endpoint, resolve
from agents.llm.errors import (
    CapabilityRefused,
    CircuitOpen,
    LLMError,
    LLMNotConfigured,
    LLMUnavailable,
    TimeLimitReached,
)
from agents.task_limits import task_limits  # noqa: F401  (re-exported: agents.llm.task_limits)

log = structlog.get_logger(__name__)


@dataclass
class Completion:
    alias: str
    model: str
    content: str
    tool_calls: list[dict[str, str]] = field(default_factory=list)  # [{id, name, arguments}]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    attempts: int = 1
    finish_reason: str = ""
    tools_refused: bool = False  # tools were offered but the endpoint refuses them: answered without
    structured: str = ""  # complete_json: the structured-output level that answered

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @property
    def model_label(self) -> str:
        return self.alias if self.alias == self.model else f"{self.alias} ({self.model})"


MAX_TOKENS = {"chat": "LLM_MAX_TOKENS_CHAT", "rca": "LLM_MAX_TOKENS_RCA"}


def max_tokens_for(purpose: str) -> int:
    return int(getattr(settings, MAX_TOKENS.get(purpose, "LLM_MAX_TOKENS_CHAT")))


def deadline_in(seconds: float) -> float:
    """A deadline for `complete(deadline=...)`, on the monotonic clock."""
    return time.monotonic() + seconds


_clients: dict[tuple[str, str], openai.OpenAI] = {}
_clients_lock = threading.Lock()


def _client(endpoint: Endpoint) -> openai.OpenAI:
    key = (endpoint.base_url, endpoint.api_key)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            # max_retries=0: retries are ours (counted, breaker-aware, Retry-After capped).
            # The timeout is set per request (the smaller of LLM_TIMEOUT and the caller's deadline).
            client = openai.OpenAI(
                base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=settings.LLM_TIMEOUT, max_retries=0
            )
            _clients[key] = client
    return client


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None) or {}
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return float(milliseconds) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


def _backoff(attempt: int) -> float:
    base = settings.LLM_RETRY_BACKOFF * (2**attempt)
    return min(base + random.uniform(0, base / 2), settings.LLM_RETRY_MAX_WAIT)


def _provider_detail(exc: openai.APIStatusError) -> str:
    """The provider's own words, for the log only (a pydantic dump, a server path): never for people."""
    body = exc.body
    detail: Any = None
    if isinstance(body, dict):
        inner = body.get("error")
        detail = body.get("message") or (inner.get("message") if isinstance(inner, dict) else inner) or body.get("detail")
    return str(detail or exc.message)[:1000]


def _refusal_sentence(status: int, endpoint: Endpoint) -> str:
    if status in (401, 403):
        return f"the language model endpoint rejected our API key (HTTP {status})"
    if status == 404:
        return f"the language model endpoint does not know the model {endpoint.model!r} (HTTP 404)"
    if status == 413:
        return "the request was too large for the language model endpoint (HTTP 413)"
    return f"the language model endpoint refused the request (HTTP {status})"


_REASON_WORDS = {
    "rate_limited": "is rate-limiting us",
    "timeout": "did not answer in time",
    "connection_error": "could not be reached",
    "server_error": "kept failing",
}


def complete(
    messages: list[dict[str, Any]],
    *,
    alias: str,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: str = "auto",
    response_format: dict[str, Any] | None = None,
    purpose: str = "chat",
    max_tokens: int | None = None,
    temperature: float | None = 0.2,
    deadline: float | None = None,
    probe: str = "",
) -> Completion:
    """One chat completion, with retries and the breaker. Raises LLMError subclasses.

    Always sends `max_tokens` (the purpose's setting unless given) and string contents; with
    tools, `tool_choice` (a name forces that tool). Each request's timeout is the smaller of
    LLM_TIMEOUT and what is left before `deadline`. A server that refuses tools is asked again
    without them (the result says `tools_refused`), once learned, not at all. With
    `probe="structured"`, a refusal that may be of the response_format (a 4xx/5xx that is not an
    outage) raises CapabilityRefused at once.
    """
    endpoint = resolve(alias)
    if not endpoint.api_key:
        metrics.LLM_REQUESTS.labels(alias, purpose, "not_configured").inc()
        raise LLMNotConfigured("no language model is configured (set LLM_API_KEY)")
    kwargs: dict[str, Any] = {
        "model": endpoint.model,
        "messages": compat.wire_messages(messages),
        "max_tokens": max_tokens or max_tokens_for(purpose),
    }
    if response_format:
        kwargs["response_format"] = response_format
    if temperature is not None:
        kwargs["temperature"] = temperature
    if not tools:
        return _call(endpoint, kwargs, purpose=purpose, deadline=deadline, probe=probe)
    capabilities = compat.Capabilities(endpoint.base_url, endpoint.model)
    if capabilities.get("tools") == "no":
        return replace(_call(endpoint, kwargs, purpose=purpose, deadline=deadline, probe=probe), tools_refused=True)
    wire_tools = compat.wire_tools(tools)
    with_tools = {**kwargs, "tools": wire_tools, "tool_choice": compat.wire_tool_choice(tool_choice, wire_tools)}
    # Only a request without tool results can tell us the server refuses tools as such.
    first_round = not any(m.get("role") == "tool" for m in messages)
    try:
        return _call(endpoint, with_tools, purpose=purpose, deadline=deadline, probe="tools" if first_round else probe)
    except CapabilityRefused as exc:
        if not first_round:
            raise  # the caller's own probe (structured output), not a refusal of tools
        refused = exc
    completion = _call(endpoint, kwargs, purpose=purpose, deadline=deadline, probe=probe)
    capabilities.learn("tools", "no", status=refused.status)
    return replace(completion, tools_refused=True)


def complete_json(
    messages: list[dict[str, Any]],
    *,
    alias: str,
    schema: dict[str, Any],
    name: str,
    purpose: str = "rca",
    max_tokens: int | None = None,
    deadline: float | None = None,
) -> Completion:
    """A completion whose content should be one JSON object matching `schema`.

    Tries json_schema, then json_object, then the prompt alone (the messages must describe the
    JSON; the caller validates the content in every case), starting at the level learned for this
    endpoint+model. Refusals on the way are capability failures: no retries, no breaker count.
    """
    endpoint = resolve(alias)
    capabilities = compat.Capabilities(endpoint.base_url, endpoint.model)
    levels = compat.STRUCTURED_LEVELS
    learned = capabilities.get("structured")
    start = levels.index(learned) if learned in levels else 0
    refused_status = 0
    for level in levels[start:]:
        if level == "json_schema":
            response_format: dict[str, Any] | None = {
                "type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": False}
            }
        elif level == "json_object":
            response_format = {"type": "json_object"}
        else:
            response_format = None
        try:
            completion = _call_for(messages, alias=alias, response_format=response_format, purpose=purpose,
                                   max_tokens=max_tokens, deadline=deadline, probe="" if level == "prompt" else "structured")
        except CapabilityRefused as exc:
            refused_status = exc.status
            log.info("llm_structured_output_refused", model=alias, level=level, status=exc.status)
            continue
        if level != levels[start]:
            capabilities.learn("structured", level, status=refused_status)
        return replace(completion, structured=level)
    raise AssertionError("unreachable")  # the prompt level is never a probe


def _call_for(messages: list[dict[str, Any]], **kwargs: Any) -> Completion:
    return complete(messages, temperature=0, **kwargs)


def _call(endpoint: Endpoint, kwargs: dict[str, Any], *, purpose: str, deadline: float | None, probe: str = "") -> Completion:
    alias = endpoint.alias
    breaker = CircuitBreaker(endpoint.base_url)
    client = _client(endpoint)
    attempts = settings.LLM_MAX_RETRIES + 1
    dirty = False
    for attempt in range(attempts):
        timeout = settings.LLM_TIMEOUT
        if deadline is not None:
            left = deadline - time.monotonic()
            if left < 1:
                metrics.LLM_REQUESTS.labels(alias, purpose, "time_limit").inc()
                raise TimeLimitReached("the language model did not finish within the time allowed for it")
            timeout = min(timeout, left)
        try:
            dirty = breaker.before_call() or dirty
        except CircuitOpen:
            metrics.LLM_REQUESTS.labels(alias, purpose, "circuit_open").inc()
            raise
        started = time.monotonic()
        wait: float | None = None
        try:
            response = client.chat.completions.create(**kwargs, timeout=timeout)
        except openai.RateLimitError as exc:
            reason, detail = "rate_limited", _provider_detail(exc)
            wait = _retry_after(exc.response)
        except openai.APITimeoutError:
            reason, detail = "timeout", f"no answer within {timeout:.0f}s"
        except openai.APIConnectionError as exc:
            reason, detail = "connection_error", str(exc.__cause__ or exc)
        except openai.APIStatusError as exc:
            if compat.refuses_feature(probe, exc.status_code, _provider_detail(exc)):
                metrics.LLM_REQUESTS.labels(alias, purpose, "capability_refused").inc()
                log.info("llm_call_capability_refused", model=alias, purpose=purpose, status=exc.status_code,
                         detail=_provider_detail(exc))
                raise CapabilityRefused(exc.status_code) from exc
            if exc.status_code < 500:
                # A bad request, key or model: retrying cannot help, and the provider is up.
                metrics.LLM_REQUESTS.labels(alias, purpose, "client_error").inc()
                log.warning("llm_call_refused", model=alias, purpose=purpose, status=exc.status_code,
                            detail=_provider_detail(exc))
                raise LLMError(_refusal_sentence(exc.status_code, endpoint)) from exc
            reason, detail = "server_error", f"HTTP {exc.status_code}: {_provider_detail(exc)}"
        else:
            latency = time.monotonic() - started
            if dirty:
                breaker.record_success()
            else:
                breaker.set_closed_gauge()
            return _completion(endpoint, response, latency, attempt + 1, purpose)
        metrics.LLM_REQUESTS.labels(alias, purpose, reason).inc()
        delay = wait if wait is not None else _backoff(attempt)
        last = attempt == attempts - 1
        past_deadline = deadline is not None and time.monotonic() + delay + 1 >= deadline
        # A request our deadline cut short says the model is slow for this budget, not that it is down.
        cut_short = reason == "timeout" and timeout < settings.LLM_TIMEOUT
        if last or delay > settings.LLM_RETRY_MAX_WAIT or past_deadline or cut_short:
            if not cut_short:
                breaker.record_failure()
            log.warning("llm_call_failed", model=alias, purpose=purpose, reason=reason, detail=detail[:1000],
                        attempts=attempt + 1, deadline_reached=past_deadline or cut_short)
            if past_deadline or cut_short:
                raise TimeLimitReached("the language model did not finish within the time allowed for it")
            tries = "1 attempt" if attempt == 0 else f"{attempt + 1} attempts"
            raise LLMUnavailable(f"the language model endpoint {_REASON_WORDS[reason]} ({tries})")
        metrics.LLM_RETRIES.labels(alias, reason).inc()
        log.info("llm_call_retry", model=alias, purpose=purpose, reason=reason, wait_s=round(delay, 2), attempt=attempt + 1)
        time.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


def _completion(endpoint: Endpoint, response: Any, latency: float, attempts: int, purpose: str) -> Completion:
    choice = response.choices[0] if response.choices else None
    message = choice.message if choice is not None else None
    calls = []
    for call in (getattr(message, "tool_calls", None) or []):
        function = getattr(call, "function", None)
        if function is None:
            continue
        calls.append({"id": call.id or f"call_{len(calls)}", "name": function.name or "", "arguments": function.arguments or ""})
    usage = getattr(response, "usage", None)
    prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    finish_reason = str(getattr(choice, "finish_reason", "") or "")
    metrics.LLM_REQUESTS.labels(endpoint.alias, purpose, "ok").inc()
    metrics.LLM_TOKENS.labels(endpoint.alias, "prompt").inc(prompt_tokens)
    metrics.LLM_TOKENS.labels(endpoint.alias, "completion").inc(completion_tokens)
    metrics.LLM_LATENCY.labels(endpoint.alias).observe(latency)
    log.info(
        "llm_call",
        model=endpoint.alias,
        purpose=purpose,
        latency_ms=int(latency * 1000),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        tool_calls=len(calls),
        attempts=attempts,
        finish_reason=finish_reason,
    )
    return Completion(
        alias=endpoint.alias,
        model=endpoint.model,
        content=(getattr(message, "content", None) or "") if message is not None else "",
        tool_calls=calls,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_ms=int(latency * 1000),
        attempts=attempts,
        finish_reason=finish_reason,
    )
