"""What differs between OpenAI-compatible servers, and what we learned about each one.

Servers that call themselves OpenAI-compatible refuse different parts of the same request
(checked against llama-cpp-python's server; vLLM and Ollama as documented and emulated by the
strict fake in tests/fakes/openai_server.py):

- an assistant message with `"content": null` (valid for OpenAI) is a 500 on llama-cpp-python
  and a 400 on Ollama when it carries no tool calls: we always send a string;
- without `tool_choice` llama-cpp-python renders no tools; vLLM without its auto-tool flags
  answers 400 to `"auto"`; Ollama answers 400 "does not support tools" for some models;
- `response_format: json_schema` is a 500 on llama-cpp-python; `json_object` works there;
- a `pattern` holding `\\.` in a forced tool's schema crashed llama-cpp-python's grammar
  parser (the whole server): schemas go to the model without `pattern`.

Which structured-output level and whether tools work is remembered per endpoint and model in
Redis for LLM_CAPABILITY_TTL, so a refusal is paid for once, not on every request.
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis
import structlog
from django.conf import settings

from agents import metrics_llm as metrics

log = structlog.get_logger(__name__)

# Structured output, strongest first: the server enforces our schema; it enforces JSON; the
# prompt asks for JSON and we validate it.
STRUCTURED_LEVELS = ("json_schema", "json_object", "prompt")

# Statuses that say nothing about what the server supports: auth, unknown model, rate limits,
# a gateway or an overloaded server. Any other 4xx/5xx to a request using an optional feature
# may be the server refusing that feature (llama-cpp-python answers 500 to json_schema).
_NOT_CAPABILITY = frozenset({401, 403, 404, 408, 409, 413, 429, 502, 503, 504})


def refuses_feature(feature: str, status: int, detail: str) -> bool:
    """Is this error the server refusing `feature` (not an outage, not a plain bad request)?

    Structured output: any 4xx/5xx but an outage's (llama-cpp-python answers json_schema with a
    500 carrying its request-validation dump). Tools: a 400/422 that names tools (Ollama "does not support tools", vLLM
    "auto tool choice requires ..."); a hosted API's passing 500 must not cost chat its tools.
    """
    if feature == "structured":
        return 400 <= status < 600 and status not in _NOT_CAPABILITY
    if feature == "tools":
        return status in (400, 422) and "tool" in detail.lower()
    return False


def wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as every server accepts them: `content` is always a string, never null."""
    result = []
    for message in messages:
        if message.get("content") is None:
            message = {**message, "content": ""}
        result.append(message)
    return result


def _without_patterns(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_patterns(v) for k, v in schema.items() if not (k == "pattern" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_without_patterns(v) for v in schema]
    return schema


def wire_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool definitions without regex `pattern`s (arguments are validated by call_tool anyway)."""
    return [_without_patterns(tool) for tool in tools]


def wire_tool_choice(choice: str, tools: list[dict[str, Any]]) -> str | dict[str, Any]:
    """`auto`, `required`, `none`, or a tool's name -> the named-function form."""
    if choice in ("auto", "required", "none"):
        return choice
    names = {(t.get("function") or {}).get("name") for t in tools}
    if choice in names:
        return {"type": "function", "function": {"name": choice}}
    return "auto"


class Capabilities:
    """What one endpoint+model was found to refuse, in one Redis hash with a TTL."""

    def __init__(self, base_url: str, model: str) -> None:
        self.label = f"{base_url} {model}"
        self.key = "aiops:llm:caps:" + hashlib.sha256(f"{base_url}\n{model}".encode()).hexdigest()[:16]

    def _redis(self) -> redis.Redis:
        from agents.llm.breaker import _redis

        return _redis()

    def get(self, feature: str) -> str | None:
        try:
            value = self._redis().hget(self.key, feature)
        except redis.RedisError:
            return None  # without Redis every request probes again: slower, still correct
        return value.decode() if isinstance(value, bytes) else value

    def learn(self, feature: str, value: str, *, status: int) -> None:
        metrics.LLM_CAPABILITY_FALLBACKS.labels(feature, value).inc()
        log.warning("llm_capability_learned", endpoint=self.label, feature=feature, value=value, status=status,
                    ttl_s=settings.LLM_CAPABILITY_TTL)
        try:
            pipe = self._redis().pipeline()
            pipe.hset(self.key, feature, value)
            pipe.expire(self.key, settings.LLM_CAPABILITY_TTL)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("llm_capability_unsaved", endpoint=self.label, error=str(exc))

    def forget(self) -> None:
        self._redis().delete(self.key)
