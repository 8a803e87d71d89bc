"""Shared fixtures: real PostgreSQL and Redis (from settings), and one real Celery worker per session."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each room keeps its shared fixtures in a plugin of its own, so parallel work never edits one file.
pytest_plugins = [
    "tests.plugins.sandbox",
    "tests.plugins.mcp",
    "tests.plugins.llm",
    "tests.plugins.chat",
    "tests.plugins.incidents",
    "tests.plugins.engine",
    "tests.plugins.texts",
    "tests.plugins.chaos",
]


@pytest.fixture(autouse=True)
def _fast_passwords(settings):  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def database_url(db: dict[str, object]) -> str:
    host = str(db.get("HOST") or "")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    password = f":{quote(str(db['PASSWORD']), safe='')}" if db.get("PASSWORD") else ""
    return f"postgres://{quote(str(db.get('USER') or ''), safe='')}{password}@{quote(host, safe='')}{port}/{db['NAME']}"


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process that must see the test database (not the dev one)."""
    from django.conf import settings

    env = dict(os.environ)
    env["DATABASE_URL"] = database_url(settings.DATABASES["default"])
    env["REDIS_URL"] = settings.REDIS_URL
    env["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL
    env["CELERY_RESULT_BACKEND"] = settings.CELERY_RESULT_BACKEND
    env["AIOPS_SECRET_KEY"] = settings.SECRET_KEY
    env["AIOPS_MCP_TOKEN"] = settings.AIOPS_MCP_TOKEN
    env["AIOPS_LOG_FORMAT"] = "json"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Worker:
    """A real `celery worker` process on the real broker, writing to the test database."""

    def __init__(self, log_path: Path, env: dict[str, str], concurrency: int = 2) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "aiops_site", "worker",
                "--loglevel", "INFO", "--concurrency", str(concurrency),
                "--hostname", f"test-{os.getpid()}-{time.monotonic_ns()}@%h", "--without-heartbeat",
                "--without-mingle", "--without-gossip",
                "--include", "tests.support_tasks",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited early:\n{self.log()}")
            if b"ready." in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        # Not left running: a worker that comes up after the test gave up would consume the queue
        # beside the next one started (the chaos suite restarts workers), and add to the load
        # that made it slow.
        import psutil

        for child in psutil.Process(self.process.pid).children(recursive=True):
            child.kill()
        self.process.kill()
        self.process.wait(10)
        raise RuntimeError(f"celery worker not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture(scope="session")
def purge_broker(django_db_setup) -> None:  # type: ignore[no-untyped-def]
    """Messages left by an earlier, interrupted session must not run against this one."""
    import redis
    from django.conf import settings

    from aiops_site.celery import app

    app.control.purge()
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


class SessionWorker:
    """The session's worker, started again before a test that uses it if it has died.

    The chaos suite restarts the session's Redis, and celery's consumer does not survive every
    broker restart ("Unrecoverable error: AttributeError(... 'hostname')", and the process
    exits): without this, every later test that uses the worker waits for nobody."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir, self.env, self.generation = log_dir, env, 0
        self.worker: Worker | None = None
        self.ensure_alive()

    def ensure_alive(self) -> None:
        if self.worker is not None and self.worker.process.poll() is None:
            return
        if self.worker is not None:
            self.worker.stop()
        self.generation += 1
        self.worker = Worker(self.log_dir / f"worker-{self.generation}.log", self.env)

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.worker is not None
        return self.worker.process

    def log(self) -> str:
        return "\n".join((self.log_dir / f"worker-{n}.log").read_text(errors="replace")
                         for n in range(1, self.generation + 1))

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, purge_broker, tmp_path_factory) -> Iterator[SessionWorker]:  # type: ignore[no-untyped-def]
    """One real worker for the whole session. Tests that use it need `transactional_db`
    (the worker sees only committed rows)."""
    worker = SessionWorker(tmp_path_factory.mktemp("worker"), worker_env())
    yield worker
    worker.stop()


@pytest.fixture(autouse=True)
def _session_worker_alive(request: pytest.FixtureRequest) -> None:
    """Before each test that uses the session's worker: the worker is running."""
    if "celery_worker" in request.fixturenames:
        request.getfixturevalue("celery_worker").ensure_alive()


def free_port() -> int:
    """A loopback port nothing listens on now (for a server a test starts)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, message: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll until predicate() is truthy; return its value or fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {message}")
