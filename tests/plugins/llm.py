"""Shared test fixtures: llm (loaded by tests/conftest.py).

- `fake_llm_server` (session): one local fake OpenAI-compatible server (tests/fakes/openai_server.py).
- `fake_llm` (function, needs db): the server, reset, with the system default model alias
  pointing at it through a `ModelAlias` row, so the test process AND the Celery worker (which
  reads the same database) talk to it with no environment change; the breaker is reset.
  Script it with `fake_llm.script(text("..."), tool_calls(("list_pods", {...})))` and read
  `fake_llm.requests` / `fake_llm.received_text()`.
- `no_llm` (function): no LLM configured anywhere (LLM_API_KEY empty, no alias rows).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


def _point_default_alias_at(server: FakeOpenAI, name: str) -> None:
    from agents.llm import CircuitBreaker
    from agents.llm.compat import Capabilities
    from agents.models import ModelAlias

    ModelAlias.objects.update_or_create(name=name, defaults={"model": "fake-model", "base_url": server.url, "enabled": True})
    CircuitBreaker(server.url).reset()
    Capabilities(server.url, "fake-model").forget()  # what an earlier test's mode taught the client


@pytest.fixture
def fake_llm(fake_llm_server: FakeOpenAI, db, settings) -> Iterator[FakeOpenAI]:  # type: ignore[no-untyped-def]
    # Fast retries for tests that exercise them; the worker keeps its own (default) settings.
    settings.LLM_RETRY_BACKOFF = 0.01
    fake_llm_server.reset()
    _point_default_alias_at(fake_llm_server, settings.LLM_DEFAULT_MODEL)
    yield fake_llm_server
    fake_llm_server.reset()


@pytest.fixture
def no_llm(db, settings) -> None:  # type: ignore[no-untyped-def]
    from agents.models import ModelAlias

    settings.LLM_API_KEY = ""
    ModelAlias.objects.all().delete()
