"""Finding 2 of #13: while PostgreSQL (or Redis) is down, every webhook and API endpoint answers
503 with `Retry-After` and a JSON body, so Alertmanager and the chat platforms deliver again.

Before: `500` HTML. Nothing is mocked: the web process (gunicorn, as `make run` starts it) runs
against a PostgreSQL and a Redis of this test's own, which the test really stops and starts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiops_site import embedded
from tests.conftest import ROOT, free_port, wait_for, worker_env
from tests.hardening.conftest import ALERTMANAGER_TOKEN, ALERTMANAGER_URL
from tests.playbooks.test_alertmanager import alert, batch

pytestmark = pytest.mark.integration
RETRY_AFTER = "7"


class Client:
    """Django test-client call shapes (`HTTP_X_...` headers) over real HTTP, for tests/channels/platforms."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def post(self, path: str, data: Any = None, content_type: str = "application/json", **extra: str) -> httpx.Response:
        headers = {"Content-Type": content_type}
        headers.update({key[5:].replace("_", "-"): value for key, value in extra.items() if key.startswith("HTTP_")})
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        return self.http.post(path, content=body, headers=headers)


@dataclass
class Stack:
    run_dir: Path
    postgres: embedded.Embedded
    redis: embedded.Embedded
    web: subprocess.Popen[bytes]
    client: Client
    log: Path
    env: dict[str, str]

    def start_postgres(self) -> None:
        self.postgres = embedded.start_postgres(self.run_dir)

    def start_redis(self) -> None:
        self.redis = embedded.start_redis(self.run_dir)


def _copy_schema(target_socket: Path) -> None:
    """The test database's schema (what the migrations built) into the throwaway PostgreSQL:
    a second `migrate` would cost ~20 s of a loaded CI machine for the same tables."""
    from django.db import connection

    db = connection.settings_dict
    dump = subprocess.run(
        [str(embedded._pg_bin("pg_dump")), "--schema-only", "--no-owner", "--no-privileges",
         "-h", str(db["HOST"]), "-U", str(db["USER"]), str(db["NAME"])],
        check=True, capture_output=True,
    ).stdout
    assert b"CREATE TABLE public.playbooks_clusterevent" in dump, f"no schema in {db['NAME']}"
    subprocess.run([str(embedded._pg_bin("psql")), "-q", "-v", "ON_ERROR_STOP=1", "-h", str(target_socket),
                    "-U", embedded.PG_USER, embedded.DB_NAME], input=dump, check=True, capture_output=True)


@pytest.fixture
def stack(transactional_db, chat_fakes) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    # Not under pytest's 0700 basetemp: as root, PostgreSQL runs as another user that must reach it.
    tmp_path = Path(tempfile.mkdtemp(prefix="aiops-outage-"))
    tmp_path.chmod(0o755)
    run_dir = tmp_path / "run"
    servers = [embedded.start_postgres(run_dir)]
    web: subprocess.Popen[bytes] | None = None
    try:
        servers.append(embedded.start_redis(run_dir))
        _copy_schema(embedded.pg_socket_dir(run_dir))
        redis_url = f"redis://127.0.0.1:{embedded.read_redis_port(run_dir)}/0"
        port = free_port()
        env = worker_env({
            "DATABASE_URL": f"postgres://{embedded.PG_USER}@/{embedded.DB_NAME}?host={embedded.pg_socket_dir(run_dir)}",
            "REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url,
            "AIOPS_ALERTMANAGER_TOKEN": ALERTMANAGER_TOKEN, "AIOPS_RETRY_AFTER": RETRY_AFTER,
            "AIOPS_RUN_DIR": str(run_dir), "AIOPS_LOG_FORMAT": "console",
        })
        log = tmp_path / "web.log"
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "aiops_site.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "--threads", "4", "--timeout", "60"],
            cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
        )
        client = Client(f"http://127.0.0.1:{port}")

        def up() -> bool:
            try:
                return client.http.get("/health").status_code == 200
            except httpx.TransportError:
                assert web.poll() is None, log.read_text(errors="replace")
                return False

        wait_for(up, timeout=90, message="gunicorn to serve /health")
        stack = Stack(run_dir, servers[0], servers[1], web, client, log, env)
        yield stack
        servers = [stack.postgres, stack.redis]
    finally:
        if web is not None:
            web.terminate()
            web.wait(20)
        embedded.stop_all(servers)
        shutil.rmtree(tmp_path, ignore_errors=True)


def _assert_unavailable(response: httpx.Response, dependency: str) -> None:
    assert response.status_code == 503, response.text[:500]
    assert response.headers["Retry-After"] == RETRY_AFTER
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["dependency"] == dependency and body["retry_after"] == int(RETRY_AFTER)
    assert "unavailable" in body["error"] and "Traceback" not in response.text


def _alertmanager(stack: Stack, body: dict[str, Any]) -> httpx.Response:
    return stack.client.post(ALERTMANAGER_URL, data=body, HTTP_AUTHORIZATION=f"Bearer {ALERTMANAGER_TOKEN}")


def test_the_inbound_endpoints_answer_503_while_postgresql_or_redis_is_down_and_work_again_after(stack, chat_fakes) -> None:  # type: ignore[no-untyped-def]
    from aiops_site.metrics import DEPENDENCY_UNAVAILABLE  # noqa: F401  (aiops_dependency_unavailable_total moves below)
    from tests.channels import platforms

    first = batch(alert("KubePodCrashLooping", fingerprint="0f0f", deployment="web", namespace="shop"))
    assert _alertmanager(stack, first).status_code == 200

    stack.postgres.stop()
    during = batch(alert("KubePodCrashLooping", fingerprint="1f1f", deployment="api", namespace="shop"))
    _assert_unavailable(_alertmanager(stack, during), "database")
    _assert_unavailable(platforms.telegram_message(stack.client, "/help", user_id=4242), "database")
    _assert_unavailable(platforms.slack_message(stack.client, "!help", user="U0OUTAGE"), "database")
    _assert_unavailable(platforms.discord_command(stack.client, chat_fakes, "/help", user="4242", channel="777"),
                        "database")
    # The REST API: a problem detail with the same keys (the token lookup is what meets the outage).
    api = stack.client.http.get("/api/v1/incidents/", headers={"Authorization": "Bearer aiops_0000_x"})
    assert api.status_code == 503 and api.headers["Retry-After"] == RETRY_AFTER
    assert api.headers["Content-Type"] == "application/problem+json"
    assert api.json()["status"] == 503 and api.json()["dependency"] == "database"
    # A person's browser gets a page, not JSON; still 503 + Retry-After.
    page = stack.client.http.get("/admin/", headers={"Accept": "text/html", "Cookie": "sessionid=" + "k" * 32})
    assert page.status_code == 503 and page.headers["Retry-After"] == RETRY_AFTER
    assert "Service unavailable" in page.text and "{" not in page.text
    metrics = stack.client.http.get("/metrics").text
    assert 'aiops_dependency_unavailable_total{dependency="database"}' in metrics

    stack.start_postgres()
    # Alertmanager's retry of the refused batch is stored once PostgreSQL is back.
    again = wait_for(lambda: (r := _alertmanager(stack, during)).status_code == 200 and r, timeout=60,
                     message="the webhook to accept the batch again")
    assert again.json()["stored"] == 1

    # Redis (the broker) down: the reply to /help is an outbox row whose delivery task is
    # published on commit; it cannot be, so the update is refused for Telegram to send again.
    stack.redis.stop()
    response = platforms.telegram_message(stack.client, "/help", user_id=4343)
    assert response.status_code == 503, response.text[:500]
    assert response.headers["Retry-After"] == RETRY_AFTER
    assert response.json()["dependency"] in ("broker", "redis")
    stack.start_redis()
    time.sleep(0.5)
    assert platforms.telegram_message(stack.client, "/help", user_id=4343).status_code == 200


ISSUE_TOKEN = """
from django.contrib.auth import get_user_model
from api.models import ApiToken
user = get_user_model().objects.create_user("outage-api", password=None)
print("TOKEN", ApiToken.issue(user, "outage test", ["read"], 1)[1])
"""


def _assert_problem(response: httpx.Response, *dependencies: str) -> None:
    assert response.status_code == 503, response.text[:500]
    assert response.headers["Retry-After"] == RETRY_AFTER
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 503 and body["dependency"] in dependencies, body
    assert body["retry_after"] == int(RETRY_AFTER) and "unavailable" in body["detail"]


def test_the_rest_api_answers_503_problems_for_an_outage_and_serves_reads_without_redis(stack) -> None:  # type: ignore[no-untyped-def]
    """The REST API under /api/v1/ (issue 13's "every webhook and API endpoint"), with a real token:
    PostgreSQL down -> every request a 503 problem detail with Retry-After (the token lookup meets
    the outage first); Redis down -> reads still served (the throttle's count is skipped), and a
    request that must publish a task (ask) a 503 problem, never a 500."""
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", ISSUE_TOKEN], cwd=ROOT, env=stack.env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    token = next(line.split()[1] for line in out.splitlines() if line.startswith("TOKEN "))
    auth = {"Authorization": f"Bearer {token}"}
    http = stack.client.http
    assert http.get("/api/v1/incidents/", headers=auth).status_code == 200

    stack.redis.stop()
    assert http.get("/api/v1/incidents/", headers=auth).status_code == 200
    _assert_problem(http.post("/api/v1/ask/", json={"question": "what is failing?"}, headers=auth), "broker", "redis")
    stack.start_redis()

    stack.postgres.stop()
    _assert_problem(http.get("/api/v1/incidents/", headers=auth), "database")
    _assert_problem(http.get("/api/v1/runs/", headers=auth), "database")
    _assert_problem(http.post("/api/v1/ask/", json={"question": "what is failing?"}, headers=auth), "database")
    stack.start_postgres()
    wait_for(lambda: http.get("/api/v1/incidents/", headers=auth).status_code == 200, timeout=60,
             message="the API to serve again")
