"""The foundation: settings validation, probes, request ids through Celery, the launcher."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, wait_for

pytestmark = pytest.mark.django_db


def _manage(env_overrides: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("AIOPS_POLL_INTERVAL", "abc", "AIOPS_POLL_INTERVAL='abc' is not an integer"),
        ("AIOPS_POLL_INTERVAL", "0", "AIOPS_POLL_INTERVAL='0' is below the minimum of 1"),
        ("AIOPS_DEBUG", "maybe", "AIOPS_DEBUG='maybe' is not a boolean"),
        ("AIOPS_LOG_LEVEL", "LOUD", "AIOPS_LOG_LEVEL='LOUD' is not one of"),
        ("DATABASE_URL", "mysql://x@y/z", "must name a PostgreSQL database"),
    ],
)
def test_it_refuses_a_bad_setting_naming_the_variable(name: str, value: str, expected: str) -> None:
    result = _manage({name: value, "AIOPS_SECRET_KEY": "x" * 50}, "check")
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_it_requires_a_secret_key_with_an_external_database() -> None:
    env = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/whatever", "AIOPS_SECRET_KEY": ""}
    result = _manage(env, "check")
    assert result.returncode == 2
    assert "AIOPS_SECRET_KEY is required" in result.stderr


def test_it_reads_a_secret_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("s" * 60 + "\n")
    env = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/whatever", "AIOPS_SECRET_KEY_FILE": str(secret)}
    env.pop("AIOPS_SECRET_KEY", None)
    clean = {k: v for k, v in os.environ.items() if k != "AIOPS_SECRET_KEY"}
    clean.update(env)
    result = subprocess.run(
        [sys.executable, "-c", "import django,os;os.environ['DJANGO_SETTINGS_MODULE']='aiops_site.settings';"
         "from django.conf import settings;print(len(settings.SECRET_KEY))"],
        cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60,
    )
    assert result.stdout.strip() == "60", result.stderr


def test_health_answers_ok(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_checks_database_redis_and_broker(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/ready")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok", "broker": "ok"}}


def test_ready_names_redis_when_redis_is_down(client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error: ")


def test_metrics_are_exported(client) -> None:  # type: ignore[no-untyped-def]
    client.get("/health")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"django_http_requests_total_by_view_transport_method_total" in response.content


def test_the_request_id_is_returned_and_a_bad_one_replaced(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/health", HTTP_X_REQUEST_ID="abc-123").headers["X-Request-ID"] == "abc-123"
    replaced = client.get("/health", HTTP_X_REQUEST_ID="bad id\nwith newline").headers["X-Request-ID"]
    assert replaced != "bad id\nwith newline" and len(replaced) == 32


@pytest.mark.integration
@pytest.mark.urls("tests.urls_for_tests")
def test_a_request_id_follows_the_request_into_the_worker_and_its_children(
    client, celery_worker, transactional_db, caplog  # type: ignore[no-untyped-def]
) -> None:
    response = client.get("/test/enqueue", HTTP_X_REQUEST_ID="req-follow-me-42")
    assert response.headers["X-Request-ID"] == "req-follow-me-42"
    web_events = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert {"event": "test_view_enqueued", "request_id": "req-follow-me-42"}.items() <= next(
        e for e in web_events if e["event"] == "test_view_enqueued"
    ).items()

    def worker_lines() -> list[dict[str, object]]:
        out = []
        for line in celery_worker.log().splitlines():
            if line.startswith("{") and "test_task_ran" in line:
                out.append(json.loads(line))
        return out

    lines = wait_for(lambda: len(worker_lines()) >= 2 and worker_lines(), message="both tasks to log")
    assert {line["request_id"] for line in lines} == {"req-follow-me-42"}
    assert {line["depth"] for line in lines} == {0, 1}


@pytest.mark.integration
def test_make_run_launcher_comes_up_refuses_a_second_copy_and_stops_cleanly(tmp_path: Path) -> None:
    """The launcher on its own run directory and ports: embedded PG + Redis, migrate, supervisord, /ready."""
    web_port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "AIOPS_SECRET_KEY"}}
    env.update(
        AIOPS_RUN_DIR=str(tmp_path / "run"),
        AIOPS_WEB_PORT=str(web_port),
        AIOPS_FLOWER_PORT=str(flower_port),
        AIOPS_LAUNCH_PROCESSES="web,worker,beat,flower",
        AIOPS_LOG_FORMAT="json",
    )
    log = open(tmp_path / "launch.log", "wb")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "aiops_site.launch"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        def ready() -> bool:
            assert launcher.poll() is None, (tmp_path / "launch.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/ready", timeout=2) as response:
                    return response.status == 200
            except Exception:
                return False

        wait_for(ready, timeout=180, interval=1, message="/ready of the launched system")
        second = subprocess.run(
            [sys.executable, "-m", "aiops_site.launch"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1
        assert "already running" in second.stdout
        # Flower answers only with its generated basic-auth credentials (once it is up: it starts
        # beside the web process, not before /ready).
        def flower_status() -> int:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{flower_port}/api/workers", timeout=5)
            except urllib.error.HTTPError as exc:
                return exc.code
            except OSError:
                return 0
            return 200

        assert wait_for(flower_status, timeout=60, interval=0.5, message="Flower to answer") == 401
    finally:
        os.killpg(launcher.pid, signal.SIGINT)
        launcher.wait(90)
        log.close()
    output = (tmp_path / "launch.log").read_text(errors="replace")
    assert "[aiops] stopped" in output, output[-3000:]
    # Every process of the run is gone, the embedded servers included.
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "run")], capture_output=True, text=True).stdout
    assert leftovers.strip() == "", leftovers


def test_ready_answers_503_promptly_when_redis_hangs(client, settings) -> None:  # type: ignore[no-untyped-def]
    """A stopped (not dead) Redis still accepts TCP connections but never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        settings.REDIS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        started = time.monotonic()
        response = client.get("/ready")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("error: ")
    assert elapsed < 5


@pytest.mark.integration
def test_embedded_servers_stop_when_their_launcher_is_killed(tmp_path: Path) -> None:
    """A SIGKILLed launcher (OOM killer, CI timeout) must not leave PostgreSQL and Redis running,
    or the next `make run` finds its data directory in use."""
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "aiops_site.embedded", "--run-dir", str(run_dir), "--", "sleep", "120"],
        cwd=ROOT, env=env, start_new_session=True,
    )

    def pids(pattern: str) -> list[str]:
        return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()

    def servers() -> list[str]:
        # redis-server rewrites its title to "redis-server ADDRESS:PORT"; postgres keeps -D DIR.
        port = (run_dir / "redis" / "port").read_text().strip() if (run_dir / "redis" / "port").exists() else "none"
        return pids(f"postgres -D {run_dir}/pg") + pids(f"redis-server 127.0.0.1:{port}$")

    try:
        wait_for(lambda: len(servers()) >= 2, timeout=60, message="both embedded servers")
        launcher.kill()
        launcher.wait(10)
        wait_for(lambda: servers() == [], timeout=30, message="the embedded servers to stop with their launcher")
    finally:
        for pid in servers():
            os.kill(int(pid), signal.SIGKILL)


def test_an_embedded_server_keeps_its_port_across_a_restart_its_clients_saw(tmp_path: Path) -> None:
    """A server that stops first leaves its side of each client connection in TIME_WAIT on its
    port; the restarted server still gets that port (clients keep their URL). It moved before:
    the web's broker connection then pointed at nothing until the web restarted."""
    import socket

    from aiops_site.embedded import kept_port

    port_file = tmp_path / "redis.port"
    port = kept_port(port_file)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server closes first: its side goes to TIME_WAIT
    server.close()
    client.recv(1)
    client.close()
    with socket.socket() as plain:  # what the old check saw: the port looks taken
        try:
            plain.bind(("127.0.0.1", port))
            looked_taken = False
        except OSError:
            looked_taken = True
    assert looked_taken, "no TIME_WAIT was left: the test proves nothing on this kernel"
    assert kept_port(port_file) == port


@pytest.mark.integration
def test_a_worker_keeps_its_database_connection_from_task_to_task(celery_worker, transactional_db) -> None:  # type: ignore[no-untyped-def]
    """Celery's Django fixup would open a new PostgreSQL backend for every task; each pool
    process keeps one, as a web worker does (CONN_MAX_AGE)."""
    from celery import group

    from tests.support_tasks import database_backend

    results = group(database_backend.s() for _ in range(12)).apply_async().get(timeout=60)
    backends: dict[int, set[int]] = {}
    for process, backend in results:
        backends.setdefault(process, set()).add(backend)
    assert sum(1 for process, _ in results if len(backends[process]) == 1) == len(results), backends
    assert max(sum(1 for p, _ in results if p == process) for process in backends) >= 2, "no process ran two tasks"
