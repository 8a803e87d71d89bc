"""The LLM client against a local fake OpenAI-compatible server, through the real `openai` SDK."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from django.contrib.auth import get_user_model
from prometheus_client import REGISTRY

from agents import llm
from agents.models import Conversation, ModelAlias, UserPreference
from tests.conftest import ROOT
from tests.fakes.openai_server import error, rate_limited, text

pytestmark = pytest.mark.django_db


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_it_answers_through_the_openai_sdk_and_counts_tokens(fake_llm, settings) -> None:  # type: ignore[no-untyped-def]
    fake_llm.script(text("all pods are running"))
    model = settings.LLM_DEFAULT_MODEL
    before = _metric("aiops_llm_tokens_total", model=settings.LLM_DEFAULT_MODEL, kind="prompt")
    calls_before = _metric("aiops_llm_requests_total", model=model, purpose="chat", outcome="ok")
    timed_before = _metric("aiops_llm_latency_seconds_count", model=model)
    result = llm.complete([{"role": "user", "content": "how are my pods?"}], alias=settings.LLM_DEFAULT_MODEL)
    assert result.content == "all pods are running"
    assert _metric("aiops_llm_requests_total", model=model, purpose="chat", outcome="ok") == calls_before + 1
    assert _metric("aiops_llm_latency_seconds_count", model=model) == timed_before + 1
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert _metric("aiops_llm_tokens_total", model=settings.LLM_DEFAULT_MODEL, kind="prompt") == before + result.prompt_tokens
    request = fake_llm.completions[-1]
    assert request.json["model"] == "fake-model"
    assert request.headers["authorization"] == f"Bearer {llm.NO_KEY_NEEDED}"
    assert "openai" in request.headers["user-agent"].lower()


def test_it_retries_a_429_after_retry_after_and_a_5xx(fake_llm, settings) -> None:  # type: ignore[no-untyped-def]
    fake_llm.script(rate_limited(retry_after=0.3), error(503, "overloaded"), text("fine now"))
    model = settings.LLM_DEFAULT_MODEL
    retries_before = {r: _metric("aiops_llm_retries_total", model=model, reason=r) for r in ("rate_limited", "server_error")}
    started = time.monotonic()
    result = llm.complete([{"role": "user", "content": "hi"}], alias=settings.LLM_DEFAULT_MODEL)
    assert result.content == "fine now"
    assert result.attempts == 3
    for reason, before in retries_before.items():  # operators see each retry and its cause
        assert _metric("aiops_llm_retries_total", model=model, reason=reason) == before + 1
    assert len(fake_llm.completions) == 3
    assert time.monotonic() - started >= 0.3  # Retry-After was honoured


def test_it_gives_up_on_a_retry_after_longer_than_it_may_wait(fake_llm, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LLM_RETRY_MAX_WAIT = 1
    fake_llm.script(rate_limited(retry_after=120))
    with pytest.raises(llm.LLMUnavailable, match="is rate-limiting us"):
        llm.complete([{"role": "user", "content": "hi"}], alias=settings.LLM_DEFAULT_MODEL)
    assert len(fake_llm.completions) == 1


def test_it_does_not_retry_a_bad_request(fake_llm, settings) -> None:  # type: ignore[no-untyped-def]
    fake_llm.script(error(400, "model not found"))
    with pytest.raises(llm.LLMError, match=r"^the language model endpoint refused the request \(HTTP 400\)$"):
        llm.complete([{"role": "user", "content": "hi"}], alias=settings.LLM_DEFAULT_MODEL)
    assert len(fake_llm.completions) == 1


def test_it_times_out_a_slow_provider(fake_llm, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LLM_TIMEOUT = 1.0
    settings.LLM_MAX_RETRIES = 0
    fake_llm.script(text("too late", delay=3))
    started = time.monotonic()
    with pytest.raises(llm.LLMUnavailable, match="did not answer in time"):
        llm.complete([{"role": "user", "content": "hi"}], alias=settings.LLM_DEFAULT_MODEL)
    assert time.monotonic() - started < 2.5


def test_the_circuit_opens_fails_fast_and_closes_after_a_good_probe(fake_llm, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LLM_MAX_RETRIES = 0
    settings.LLM_BREAKER_THRESHOLD = 2
    settings.LLM_BREAKER_COOLDOWN = 1.0
    alias = settings.LLM_DEFAULT_MODEL
    fake_llm.script(error(500), error(502))
    for _ in range(2):
        with pytest.raises(llm.LLMUnavailable):
            llm.complete([{"role": "user", "content": "hi"}], alias=alias)
    assert _metric("aiops_llm_circuit_open", endpoint=fake_llm.url) == 1

    # Open: the provider is not called at all, and the error says for how long calls pause.
    with pytest.raises(llm.CircuitOpen, match="circuit open"):
        llm.complete([{"role": "user", "content": "hi"}], alias=alias)
    assert len(fake_llm.completions) == 2
    # The state is in Redis, so another process (a fresh breaker object here) sees it too.
    assert llm.CircuitBreaker(fake_llm.url).is_open()

    time.sleep(1.1)
    fake_llm.script(text("back"))
    assert llm.complete([{"role": "user", "content": "hi"}], alias=alias).content == "back"
    assert _metric("aiops_llm_circuit_open", endpoint=fake_llm.url) == 0
    assert not llm.CircuitBreaker(fake_llm.url).is_open()


def test_no_key_means_not_configured(no_llm, settings) -> None:  # type: ignore[no-untyped-def]
    assert not llm.is_configured()
    with pytest.raises(llm.LLMNotConfigured, match="LLM_API_KEY"):
        llm.complete([{"role": "user", "content": "hi"}], alias=settings.LLM_DEFAULT_MODEL)


def test_model_choice_goes_conversation_then_user_then_channel_then_system(settings) -> None:  # type: ignore[no-untyped-def]
    settings.LLM_MODEL_ALIASES = "gpt-4o=openai/gpt-4o,gpt-4o-mini=openai/gpt-4o-mini,llama=meta/llama"
    settings.LLM_CHANNEL_MODELS = "slack=llama"
    settings.LLM_DEFAULT_MODEL = "gpt-4o-mini"
    alice = get_user_model().objects.create(username="alice")
    conversation = Conversation.objects.create(user=alice, channel_kind="slack")

    assert llm.choose_model(alice, "telegram", conversation) == ("gpt-4o-mini", "system")
    assert llm.choose_model(alice, "slack", conversation) == ("llama", "channel")
    UserPreference.objects.create(user=alice, model_alias="gpt-4o")
    assert llm.choose_model(alice, "slack", conversation) == ("gpt-4o", "user")
    ModelAlias.objects.create(name="claude", model="anthropic/claude", base_url="http://127.0.0.1:9/v1")
    conversation.model_override = "claude"
    assert llm.choose_model(alice, "slack", conversation) == ("claude", "conversation")
    # An alias the admin disabled falls through to the next level instead of failing answers.
    ModelAlias.objects.filter(name="claude").update(enabled=False)
    assert llm.choose_model(alice, "slack", conversation) == ("gpt-4o", "user")


def test_a_malformed_alias_setting_stops_start_up_naming_the_variable() -> None:
    env = {**os.environ, "LLM_CHANNEL_MODELS": "slack=gpt-4o,web", "DJANGO_SETTINGS_MODULE": "aiops_site.settings"}
    result = subprocess.run([sys.executable, "-c", "from django.conf import settings; settings.LLM_TIMEOUT"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "LLM_CHANNEL_MODELS='slack=gpt-4o,web': 'web' is not name=value" in result.stderr


def test_the_admin_edits_aliases_and_shows_conversations(admin_client, settings) -> None:  # type: ignore[no-untyped-def]
    response = admin_client.post(
        "/admin/agents/modelalias/add/",
        {"name": "local-llama", "model": "llama3.2", "base_url": "http://127.0.0.1:11434/v1", "api_key_variable": "",
         "description": "Ollama on the box", "enabled": "on"},
    )
    assert response.status_code == 302, response.content
    assert llm.resolve("local-llama") == llm.Endpoint("local-llama", "llama3.2", "http://127.0.0.1:11434/v1", llm.NO_KEY_NEEDED)
    bad = admin_client.post("/admin/agents/modelalias/add/", {"name": "bad name!", "model": "x", "api_key_variable": "lower"})
    assert bad.status_code == 200 and b"what people type after /model" in bad.content
    assert b"An environment variable name" in bad.content
    for page in ("modelalias", "conversation", "message", "userpreference"):
        assert admin_client.get(f"/admin/agents/{page}/").status_code == 200
