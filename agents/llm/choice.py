"""Model aliases and the choice of model: conversation override > user preference > channel-kind
default > system default (LLM_DEFAULT_MODEL); plus the models the endpoint itself serves."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import structlog
from django.conf import settings

from agents.llm.errors import UnknownModel
from aiops_site.env import EnvError

log = structlog.get_logger(__name__)

NO_KEY_NEEDED = "not-needed"  # local servers (Ollama, llama.cpp) ignore the key; the SDK wants one


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
    """An alias; or LLM_DEFAULT_MODEL / LLM_RCA_MODEL as a raw model id; or a model that
    LLM_BASE_URL's `/v1/models` lists; each of the latter on LLM_BASE_URL."""
    known = aliases()
    if alias in known:
        return known[alias]
    if alias and (alias in (settings.LLM_DEFAULT_MODEL, settings.LLM_RCA_MODEL) or alias in served_models()):
        return Endpoint(alias, alias, settings.LLM_BASE_URL, settings.LLM_API_KEY)
    raise UnknownModel(alias, selectable())


_MODELS_CACHE_TTL = 300
_MAX_MODEL_NAME = 63  # what Conversation.model_override and UserPreference.model_alias hold


def served_models() -> list[str]:
    """The model ids LLM_BASE_URL's `/v1/models` reports (cached in Redis for 5 minutes).

    Empty when no key is configured or the endpoint does not answer: /model then offers the
    aliases and the configured defaults only.
    """
    import openai
    import orjson
    import redis

    from agents.llm.breaker import _redis

    if not settings.LLM_API_KEY or not settings.LLM_BASE_URL:
        return []
    cache_key = "aiops:llm:models:" + hashlib.sha256(settings.LLM_BASE_URL.encode()).hexdigest()[:16]
    try:
        cached = _redis().get(cache_key)
        if cached is not None:
            return list(orjson.loads(cached))
    except redis.RedisError:
        pass
    try:
        client = openai.OpenAI(base_url=settings.LLM_BASE_URL, api_key=settings.LLM_API_KEY, timeout=5.0, max_retries=0)
        names = sorted({m.id for m in client.models.list() if m.id and len(m.id) <= _MAX_MODEL_NAME})
    except openai.OpenAIError as exc:
        log.info("llm_models_unlisted", base_url=settings.LLM_BASE_URL, error=str(exc)[:300])
        names = []
    try:
        _redis().set(cache_key, orjson.dumps(names), ex=_MODELS_CACHE_TTL if names else 30)
    except redis.RedisError:
        pass
    return names


def selectable() -> list[str]:
    """Every name /model accepts: aliases, the configured default and RCA models, served models."""
    names = set(aliases()) | set(served_models())
    names |= {name for name in (settings.LLM_DEFAULT_MODEL, settings.LLM_RCA_MODEL) if name}
    return sorted(names)


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

    candidates: list[tuple[str, str]] = []
    if conversation is not None and conversation.model_override:
        candidates.append((conversation.model_override, "conversation"))
    if user is not None and getattr(user, "pk", None):
        preference = UserPreference.objects.filter(user=user).values_list("model_alias", flat=True).first()
        if preference:
            candidates.append((preference, "user"))
    if channel_default(channel_kind):
        candidates.append((channel_default(channel_kind), "channel"))
    known: list[str] = selectable() if candidates else []
    for alias, source in candidates:
        if alias in known:
            return alias, source
        log.warning("llm_model_alias_gone", alias=alias, source=source)
    return settings.LLM_DEFAULT_MODEL, "system"
