"""Shared test fixtures: engine (loaded by tests/conftest.py).

- `seed_playbooks` (function, needs db): the built-in playbooks and rules of migrations 0003 and
  0007, seeded again (transactional tests truncate what the migration wrote).
- `no_playbooks` (function, needs db): every rule disabled, for tests of other rooms that open
  incidents and do not want the engine to start runs on them.
- `make_incident(**fields)` (function, needs db): an open `Incident` with sensible defaults.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def seed_playbooks(db) -> None:  # type: ignore[no-untyped-def]
    from playbooks.models import Playbook, Rule, Step

    seed = importlib.import_module("playbooks.migrations.0003_seed_playbooks")
    seed.seed_defaults(Playbook, Step, Rule)
    importlib.import_module("playbooks.migrations.0007_seed_playbooks_follow_the_diagnosis").upgrade_defaults(
        Playbook, Step)


def restart_pods_regardless() -> None:
    """crash_loop_remediation as it was before it read its diagnosis: restart the one pod
    whatever the RCA says. For tests of other rooms (chat, metrics) that need the demo's ledger
    crash loop (a dependency failure, which the seeded playbook hands off) to ask for an approval."""
    from playbooks.models import Step

    steps = Step.objects.filter(playbook__name="crash_loop_remediation")
    steps.filter(kind="handoff").delete()
    steps.filter(tool="restart_workload").delete()
    steps.filter(tool="restart_pod").update(when="")


@pytest.fixture
def no_playbooks(db) -> None:  # type: ignore[no-untyped-def]
    from playbooks.models import Rule

    Rule.objects.update(enabled=False)


@pytest.fixture
def make_incident(db) -> Callable[..., Any]:  # type: ignore[no-untyped-def]
    from django.utils import timezone

    from playbooks.models import Incident

    def make(**fields: Any) -> Incident:
        now = timezone.now()
        defaults: dict[str, Any] = {
            "workload_kind": "Deployment",
            "namespace": "shop",
            "workload_name": "web",
            "primary_type": "crash_loop",
            "finding_types": ["crash_loop"],
            "severity": "critical",
            "affected_pods": ["web-5d9c7-abcde"],
            "evidence": {"crash_loop": {"container": "app", "restart_count": 7}},
            "title": "web crash-looping",
            "opened_at": now,
            "last_seen_at": now,
        }
        defaults.update(fields)
        return Incident.objects.create(**defaults)

    return make


# --- The engine's own stack: sandbox + our MCP server + a worker on a queue of its own -------

ENGINE_QUEUE = "engine-tests"


class EngineWorker:
    """A real worker consuming only the engine tests' queue, so a test may SIGKILL it (and no
    other room's worker takes our steps). Restartable."""

    def __init__(self, log_dir: Any, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.generation = 0
        self.worker: Any = None
        self.start()

    def start(self) -> None:
        from tests.conftest import Worker

        self.generation += 1
        self.worker = Worker(self.log_dir / f"worker-{self.generation}.log", self.env, concurrency=2)

    @property
    def process(self) -> Any:
        return self.worker.process

    def log(self) -> str:
        return "\n".join(
            (self.log_dir / f"worker-{n}.log").read_text(errors="replace") for n in range(1, self.generation + 1)
        )

    def kill(self) -> None:
        """SIGKILL the main process and its pool children at once (a machine dying)."""
        import os
        import signal

        import psutil

        parent = psutil.Process(self.process.pid)
        for child in parent.children(recursive=True):
            os.kill(child.pid, signal.SIGKILL)
        os.kill(parent.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        self.worker.stop()


@pytest.fixture(scope="session")
def engine_worker(django_db_setup, django_db_blocker, purge_broker, tmp_path_factory, kube_mcp) -> Any:  # type: ignore[no-untyped-def]
    import redis
    from django.conf import settings

    from tests.conftest import worker_env

    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(ENGINE_QUEUE)
    worker = EngineWorker(tmp_path_factory.mktemp("engine-worker"),
                          worker_env({"AIOPS_CELERY_QUEUE": ENGINE_QUEUE, "AIOPS_MCP_TOKEN": kube_mcp.token,
                                      "AIOPS_STEP_LEASE": "4"}))
    yield worker
    worker.stop()


@pytest.fixture
def engine_queue(engine_worker) -> Any:  # type: ignore[no-untyped-def]
    """What this process enqueues during the test goes to the engine's worker -- only during the
    test: the worker lives for the session, and later tests of other rooms publish to the default
    queue their own worker consumes."""
    from aiops_site.celery import app

    previous = app.conf.task_default_queue
    # Chat deliveries follow (aiops_site.queues.route_deliveries): to `engine-tests.outbound`,
    # which the engine's worker consumes, so the replies this process writes (a command in a
    # webhook) reach the chat fakes too.
    app.conf.task_default_queue = ENGINE_QUEUE
    yield engine_worker
    app.conf.task_default_queue = previous


@pytest.fixture
def engine(transactional_db, sandbox_cluster, sandbox, kube_mcp, engine_queue, approvers, seed_playbooks,  # type: ignore[no-untyped-def]
           monkeypatch) -> Any:
    """Everything a playbook run needs, end to end: the sandbox (reset to `demo`) registered as
    the default cluster, our MCP server in the registry, the seeded rules, approvers alice and
    bob, and the engine's worker. Returns a namespace with helpers."""
    from types import SimpleNamespace

    from agents.registry import register_builtin

    monkeypatch.setenv("AIOPS_MCP_TOKEN", kube_mcp.token)
    register_builtin(kube_mcp.url)
    return SimpleNamespace(cluster=sandbox_cluster, sandbox=sandbox, worker=engine_queue, approvers=approvers)
