"""Shared test fixtures: chaos (loaded by tests/conftest.py).

- `chaos_worker` (session): a real Celery worker on a queue of its own (`chaos-tests`), with a
  short step lease (AIOPS_STEP_LEASE=4 s) so a SIGKILLed worker's step is sent again within
  seconds; `.kill()` SIGKILLs it with its pool, `.start()` starts a new one.
- `chaos` (function): the engine's whole stack (sandbox reset to `demo`, our MCP server in the
  registry, the seeded rules, approvers) with what this process enqueues going to `chaos_worker`.
- `hold_response(sandbox, method, path)`: the sandbox carries out a matching request, then holds
  its response until released -- "the cluster acted, the caller has not heard yet", the window
  in which a killed worker leaves an action unaudited.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHAOS_QUEUE = "chaos-tests"
CHAOS_LEASE = 4


@pytest.fixture(scope="session")
def chaos_worker(django_db_setup, django_db_blocker, purge_broker, tmp_path_factory, kube_mcp) -> Any:  # type: ignore[no-untyped-def]
    import redis
    from django.conf import settings

    from tests.conftest import worker_env
    from tests.plugins.engine import EngineWorker

    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(CHAOS_QUEUE)
    worker = EngineWorker(tmp_path_factory.mktemp("chaos-worker"), worker_env({
        "AIOPS_CELERY_QUEUE": CHAOS_QUEUE, "AIOPS_MCP_TOKEN": kube_mcp.token, "AIOPS_STEP_LEASE": str(CHAOS_LEASE),
    }))
    yield worker
    if worker.process.poll() is None:
        worker.stop()


@pytest.fixture
def chaos(transactional_db, sandbox_cluster, sandbox, kube_mcp, chaos_worker, approvers, seed_playbooks,  # type: ignore[no-untyped-def]
          monkeypatch) -> Iterator[Any]:
    from types import SimpleNamespace

    from agents.registry import register_builtin
    from aiops_site.celery import app

    monkeypatch.setenv("AIOPS_MCP_TOKEN", kube_mcp.token)
    register_builtin(kube_mcp.url)
    if chaos_worker.process.poll() is not None:  # a test left it killed
        chaos_worker.start()
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = CHAOS_QUEUE
    yield SimpleNamespace(cluster=sandbox_cluster, sandbox=sandbox, worker=chaos_worker, approvers=approvers,
                          mcp=kube_mcp)
    app.conf.task_default_queue = previous
    if chaos_worker.process.poll() is not None:
        chaos_worker.start()


class Hold:
    def __init__(self) -> None:
        self.applied = threading.Event()  # the cluster carried out the request
        self.release = threading.Event()
        self.paths: list[str] = []


@contextmanager
def hold_response(sandbox: Any, method: str, path: str, timeout: float = 90) -> Iterator[Hold]:
    """Hold the response to the first request matching `method` and the regex `path`."""
    hold = Hold()
    api = sandbox.api
    original = api.handle
    pattern = re.compile(path)

    def handle(request: Any) -> Any:
        response = original(request)
        if request.method == method and pattern.search(request.path) and not hold.applied.is_set():
            hold.paths.append(request.path)
            hold.applied.set()
            hold.release.wait(timeout)
        return response

    api.handle = handle
    try:
        yield hold
    finally:
        hold.release.set()
        del api.handle  # back to the class's method
