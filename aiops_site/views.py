"""Liveness and readiness probes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

_CHECK_TIMEOUT_S = 1.0


@require_GET
@never_cache
def health(request: HttpRequest) -> JsonResponse:
    """The process is alive and serving requests; nothing else is checked."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_redis() -> str:
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=_CHECK_TIMEOUT_S, socket_timeout=_CHECK_TIMEOUT_S
    )
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def _check_broker() -> str:
    from aiops_site.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=_CHECK_TIMEOUT_S)
    return "ok"


def _run_check(check) -> str:  # type: ignore[no-untyped-def]
    try:
        return check()
    except Exception as exc:  # any failure means not ready; the reason is reported, not raised
        return f"error: {type(exc).__name__}: {exc}"[:300]
    finally:
        connection.close()  # the check ran in a pool thread: do not leak its connection


# A hung dependency (a stopped process still accepts TCP connections) must not hang the probe:
# the checks run side by side and whatever has not answered by the deadline is reported as such.
_pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="ready-check")
_DEADLINE_S = 3.0


@require_GET
@never_cache
def ready(request: HttpRequest) -> JsonResponse:
    """Ready to serve: the database, Redis and the Celery broker all answer. 503 names what failed."""
    futures = {
        name: _pool.submit(_run_check, check)
        for name, check in (("database", _check_database), ("redis", _check_redis), ("broker", _check_broker))
    }
    deadline = time.monotonic() + _DEADLINE_S
    checks: dict[str, str] = {}
    for name, future in futures.items():
        try:
            checks[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            checks[name] = f"error: no answer within {_DEADLINE_S:.0f}s"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if healthy else "unavailable", "checks": checks}, status=200 if healthy else 503)
