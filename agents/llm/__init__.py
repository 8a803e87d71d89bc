"""The LLM client: any OpenAI-compatible endpoint (hosted APIs, vLLM, Ollama, llama.cpp's
server) through the `openai` SDK.

- `choice`: model aliases (LLM_MODEL_ALIASES plus the admin's `ModelAlias` rows), the models the
  endpoint serves (`/v1/models`), and the choice of model by priority;
- `breaker`: a circuit breaker whose state is in Redis, shared by every worker;
- `client`: `complete()` and `complete_json()` with retries, deadlines, `max_tokens` per purpose;
- `compat`: what differs between servers and what we learned each one refuses.

Callers run it inside Celery tasks (chat answers, RCA steps): a call can take a minute.
"""

from __future__ import annotations

from agents.llm.breaker import CircuitBreaker, _redis
from agents.llm.choice import (
    NO_KEY_NEEDED,
    Endpoint,
    aliases,
    channel_default,
    choose_model,
    is_configured,
    resolve,
    selectable,
    served_models,
)
from agents.llm.client import (
    Completion,
    complete,
    complete_json,
    deadline_in,
    max_tokens_for,
    task_limits,
)
from agents.llm.errors import (
    CapabilityRefused,
    CircuitOpen,
    LLMError,
    LLMNotConfigured,
    LLMUnavailable,
    TimeLimitReached,
    UnknownModel,
)

__all__ = [
    "NO_KEY_NEEDED", "CapabilityRefused", "CircuitBreaker", "CircuitOpen", "Completion", "Endpoint", "LLMError",
    "LLMNotConfigured", "LLMUnavailable", "TimeLimitReached", "UnknownModel", "_redis", "aliases", "channel_default",
    "choose_model", "complete", "complete_json", "deadline_in", "is_configured", "max_tokens_for", "resolve",
    "selectable", "served_models", "task_limits",
]
