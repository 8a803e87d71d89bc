"""The LLM client: any OpenAI-compatible endpoint through the `openai` SDK.

What it adds to the SDK, for a worker fleet that shares one provider:

- model aliases (LLM_MODEL_ALIASES plus the admin's `ModelAlias` rows) and the choice of model
  by priority: conversation override > user preference > channel-kind default > system default;
- retries on 429 (honouring Retry-After), 5xx, timeouts and connection errors, with
  exponential back-off and jitter, done here rather than by the SDK so every retry is counted
  and the breaker sees the outcome;
- a circuit breaker whose state is in Redis, so when the provider is down every worker fails
  fast instead of each one waiting out its own timeouts and retries (closed -> open after
  LLM_BREAKER_THRESHOLD failed calls in a row -> after LLM_BREAKER_COOLDOWN one probe call
  is let through -> closed on success, open again on failure);
- token and latency metrics per model.

Callers run it inside Celery tasks (chat answers, RCA steps): a call can take a minute.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import openai
import redis
import structlog
from django.conf import settings

from agents import metrics_llm as metrics
from aiops_site.env import EnvError

log = structlog.get_logger(__name__)

NO_KEY_NEEDED = "not-needed"  # local servers (Ollama, llama.cpp) ignore the key; the SDK wants one


class LLMError(Exception):
    """The LLM call failed; the message says why in words an operator can act on."""


class LLMNotConfigured(LLMError):
    pass


class LLMUnavailable(LLMError):
    """The provider is down, rate-limiting us, or the breaker is open: try again later."""


class CircuitOpen(LLMUnavailable):
    def __init__(self, endpoint: str, retry_in: float) -> None:
        self.retry_in = retry_in
        super().__init__(f"the LLM endpoint {endpoint} is failing; calls are paused for {retry_in:.0f}s more (circuit open)")


class UnknownModel(LLMError):
    def __init__(self, alias: str, valid: list[str]) -> None:
        self.alias = alias
        self.valid = valid
        super().__init__(f"unknown model {alias!r}; choose one of: {', '.join(valid)}")


# --- aliases and model choice -------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    alias: str
    model: str
    base_url: str
    api_key: str

    @property
    def label(self) -> str:
        return self.alias


def _parse_pairs(variable: str, value: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise EnvError(f"{variable}={value!r}: {item!r} is not name=value")
        pairs[key.strip()] = val.strip()
    return pairs


def _alias_rows() -> dict[str, Any]:
    from agents.models import ModelAlias

    return {row.name: row for row in ModelAlias.objects.all()}


def aliases() -> dict[str, Endpoint]:
    """Every alias that can be chosen now: settings' first, the admin's rows over them."""
    result: dict[str, Endpoint] = {
        name: Endpoint(name, model, settings.LLM_BASE_URL, settings.LLM_API_KEY)
        for name, model in _parse_pairs("LLM_MODEL_ALIASES", settings.LLM_MODEL_ALIASES).items()
    }
    for name, row in _alias_rows().items():
        if not row.enabled:
            result.pop(name, None)
            continue
        if row.base_url:
            key = os.environ.get(row.api_key_variable, "") if row.api_key_variable else NO_KEY_NEEDED
            result[name] = Endpoint(name, row.model, row.base_url, key)
        else:
            key = os.environ.get(row.api_key_variable, "") if row.api_key_variable else settings.LLM_API_KEY
            result[name] = Endpoint(name, row.model, settings.LLM_BASE_URL, key)
    return result


def resolve(alias: str) -> Endpoint:
    """An alias, or (for LLM_DEFAULT_MODEL / LLM_RCA_MODEL only) a raw model id on LLM_BASE_URL."""
    known = aliases()
    if alias in known:
        return known[alias]
    if alias and alias in (settings.LLM_DEFAULT_MODEL, settings.LLM_RCA_MODEL):
        return Endpoint(alias, alias, settings.LLM_BASE_URL, settings.LLM_API_KEY)
    raise UnknownModel(alias, sorted(known))


def is_configured(alias: str | None = None) -> bool:
    try:
        return bool(resolve(alias or settings.LLM_DEFAULT_MODEL).api_key)
    except UnknownModel:
        return False


def channel_default(channel_kind: str) -> str:
    return _parse_pairs("LLM_CHANNEL_MODELS", settings.LLM_CHANNEL_MODELS).get(channel_kind, "")


def choose_model(user: Any, channel_kind: str, conversation: Any = None) -> tuple[str, str]:
    """(alias, where it came from): the first valid one of override, preference, channel, system.

    An override or preference naming an alias removed since falls through to the next level
    instead of failing every answer.
    """
    from agents.models import UserPreference

    known = aliases()
    candidates: list[tuple[str, str]] = []
    if conversation is not None and conversation.model_override:
        candidates.append((conversation.model_override, "conversation"))
    if user is not None and getattr(user, "pk", None):
        preference = UserPreference.objects.filter(user=user).values_list("model_alias", flat=True).first()
        if preference:
            candidates.append((preference, "user"))
    if channel_default(channel_kind):
        candidates.append((channel_default(channel_kind), "channel"))
    for alias, source in candidates:
        if alias in known:
            return alias, source
        log.warning("llm_model_alias_gone", alias=alias, source=source)
    return settings.LLM_DEFAULT_MODEL, "system"


# --- the circuit breaker --------------------------------------------------------------------

_redis_clients: dict[str, redis.Redis] = {}


def _redis() -> redis.Redis:
    url = settings.REDIS_URL
    client = _redis_clients.get(url)
    if client is None:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        _redis_clients[url] = client
    return client


class CircuitBreaker:
    """Shared by every process through three Redis keys per endpoint."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        prefix = "aiops:llm:breaker:" + hashlib.sha256(endpoint.encode()).hexdigest()[:16]
        self.failures_key = prefix + ":failures"
        self.open_key = prefix + ":open"
        self.probe_key = prefix + ":probe"

    def _set_gauge(self, is_open: bool) -> None:
        metrics.LLM_CIRCUIT_OPEN.labels(self.endpoint).set(1 if is_open else 0)

    def before_call(self) -> bool:
        """Raise CircuitOpen while open; in half-open, let exactly one caller probe.

        Returns whether there is failure state to clear on success (so a healthy endpoint costs
        one Redis round trip per call, not two).
        """
        try:
            r = _redis()
            retry_in_ms, failures_raw = r.pipeline(transaction=False).pttl(self.open_key).get(self.failures_key).execute()
            if retry_in_ms and retry_in_ms > 0:
                self._set_gauge(True)
                raise CircuitOpen(self.endpoint, retry_in_ms / 1000)
            failures = int(failures_raw or 0)
            if failures >= settings.LLM_BREAKER_THRESHOLD:
                # Half-open: the one caller that wins the probe key tries; the rest still fail fast.
                probe_ms = int((settings.LLM_TIMEOUT + 5) * 1000)
                if not r.set(self.probe_key, "1", nx=True, px=probe_ms):
                    self._set_gauge(True)
                    raise CircuitOpen(self.endpoint, max(r.pttl(self.probe_key), 0) / 1000)
                log.info("llm_circuit_half_open", endpoint=self.endpoint)
            return failures > 0
        except redis.RedisError as exc:
            # Redis holds only what can be lost: without it the breaker is off, calls still go.
            log.warning("llm_circuit_unavailable", endpoint=self.endpoint, error=str(exc))
            return False

    def record_success(self) -> None:
        try:
            r = _redis()
            r.delete(self.failures_key, self.probe_key, self.open_key)
        except redis.RedisError:
            return
        self._set_gauge(False)

    def set_closed_gauge(self) -> None:
        self._set_gauge(False)

    def record_failure(self) -> None:
        try:
            r = _redis()
            pipe = r.pipeline()
            pipe.incr(self.failures_key)
            # Failures far apart are not an outage: forget them after a quiet spell.
            pipe.expire(self.failures_key, int(settings.LLM_BREAKER_COOLDOWN * 10) + 60)
            pipe.delete(self.probe_key)
            failures = pipe.execute()[0]
            if failures >= settings.LLM_BREAKER_THRESHOLD:
                r.set(self.open_key, "1", px=int(settings.LLM_BREAKER_COOLDOWN * 1000))
                self._set_gauge(True)
                log.warning(
                    "llm_circuit_opened", endpoint=self.endpoint, failures=failures, cooldown_s=settings.LLM_BREAKER_COOLDOWN
                )
        except redis.RedisError as exc:
            log.warning("llm_circuit_unavailable", endpoint=self.endpoint, error=str(exc))

    def reset(self) -> None:
        _redis().delete(self.failures_key, self.probe_key, self.open_key)
        self._set_gauge(False)

    def is_open(self) -> bool:
        return bool(_redis().exists(self.open_key))


# --- the call -------------------------------------------------------------------------------


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

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def model_label(self) -> str:
        return self.alias if self.alias == self.model else f"{self.alias} ({self.model})"


_clients: dict[tuple[str, str, float], openai.OpenAI] = {}
_clients_lock = threading.Lock()


def _client(endpoint: Endpoint) -> openai.OpenAI:
    key = (endpoint.base_url, endpoint.api_key, settings.LLM_TIMEOUT)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            # max_retries=0: retries are ours (counted, breaker-aware, Retry-After capped).
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


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    detail = body.get("message") or (body.get("error") or {}).get("message") if isinstance(body, dict) else None
    return f"HTTP {exc.status_code}: {detail or exc.message}"


def complete(
    messages: list[dict[str, Any]],
    *,
    alias: str,
    tools: list[dict[str, Any]] | None = None,
    response_format: dict[str, Any] | None = None,
    purpose: str = "chat",
    max_tokens: int | None = None,
    temperature: float | None = 0.2,
) -> Completion:
    """One chat completion, with retries and the breaker. Raises LLMError subclasses."""
    endpoint = resolve(alias)
    if not endpoint.api_key:
        metrics.LLM_REQUESTS.labels(alias, purpose, "not_configured").inc()
        raise LLMNotConfigured("no LLM is configured: set LLM_API_KEY (or give the model alias an endpoint of its own)")
    breaker = CircuitBreaker(endpoint.base_url)
    client = _client(endpoint)
    kwargs: dict[str, Any] = {"model": endpoint.model, "messages": messages}
    if tools:
        kwargs["tools"] = tools
    if response_format:
        kwargs["response_format"] = response_format
    if max_tokens:
        kwargs["max_tokens"] = max_tokens
    if temperature is not None:
        kwargs["temperature"] = temperature
    attempts = settings.LLM_MAX_RETRIES + 1
    dirty = False
    for attempt in range(attempts):
        try:
            dirty = breaker.before_call() or dirty
        except CircuitOpen:
            metrics.LLM_REQUESTS.labels(alias, purpose, "circuit_open").inc()
            raise
        started = time.monotonic()
        wait: float | None = None
        try:
            response = client.chat.completions.create(**kwargs)
        except openai.RateLimitError as exc:
            reason, detail = "rate_limited", _error_message(exc)
            wait = _retry_after(exc.response)
        except openai.APITimeoutError:
            reason, detail = "timeout", f"no answer within {settings.LLM_TIMEOUT:g}s"
        except openai.APIConnectionError as exc:
            reason, detail = "connection_error", str(exc.__cause__ or exc)
        except openai.APIStatusError as exc:
            if exc.status_code < 500:
                # A bad request, key or model: retrying cannot help, and the provider is up.
                metrics.LLM_REQUESTS.labels(alias, purpose, "client_error").inc()
                log.warning("llm_call_refused", model=alias, purpose=purpose, status=exc.status_code)
                raise LLMError(f"the LLM endpoint refused the request ({_error_message(exc)})") from exc
            reason, detail = "server_error", _error_message(exc)
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
        if last or delay > settings.LLM_RETRY_MAX_WAIT:
            breaker.record_failure()
            log.warning("llm_call_failed", model=alias, purpose=purpose, reason=reason, detail=detail, attempts=attempt + 1)
            raise LLMUnavailable(f"the LLM endpoint failed after {attempt + 1} attempt(s): {reason} ({detail})")
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
    )
