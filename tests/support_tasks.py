"""Tasks that exist only for tests; the test worker loads them with `--include`."""

from __future__ import annotations

import structlog
from celery import shared_task

log = structlog.get_logger(__name__)


@shared_task(name="tests.log_and_chain")
def log_and_chain(depth: int) -> str:
    log.info("test_task_ran", depth=depth)
    if depth > 0:
        log_and_chain.delay(depth - 1)
    return "ok"


@shared_task(name="tests.hold_slot")
def hold_slot(key: str, timeout: float = 60.0) -> str:
    """Hold a worker slot (as a long poll or playbook step does) until the test sets `key`."""
    import time

    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.set(f"{key}:started", "1", ex=120)
    deadline = time.monotonic() + timeout
    while not client.get(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    return "released"


@shared_task(name="tests.database_backend")
def database_backend() -> list[int]:
    """(this pool process, its PostgreSQL backend): whether tasks reuse the connection."""
    import os

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return [os.getpid(), cursor.fetchone()[0]]
