"""503 with `Retry-After` while PostgreSQL, Redis or the broker is down, never a 500.

Alertmanager, Telegram, Slack and Discord retry a delivery that gets a 5xx (Alertmanager
drops one that gets a 4xx), so an outage must answer 503: the sender keeps the alert or the
update and delivers it again once we are back. A 500 HTML page says "our bug" to the sender
and to the person reading the log, and tells an API client nothing it can act on.

`DependencyOutageMiddleware.process_exception` maps the errors a view raises; `server_error`
(the root URLconf's `handler500`) maps those raised outside a view, such as the session
middleware saving a session to a stopped database. Both answer JSON (`error`, `dependency`,
`retry_after`) to machines and a short page to browsers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import structlog
from django.conf import settings
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import escape
from django.views import defaults

from aiops_site.metrics import DEPENDENCY_UNAVAILABLE

log = structlog.get_logger(__name__)


def _outage_kinds() -> tuple[tuple[type[BaseException], str], ...]:
    import kombu.exceptions
    import redis.exceptions

    return (
        (DatabaseOperationalError, "database"),
        (DatabaseInterfaceError, "database"),
        (redis.exceptions.ConnectionError, "redis"),  # BusyLoadingError (Redis starting) included
        (redis.exceptions.TimeoutError, "redis"),
        (kombu.exceptions.OperationalError, "broker"),  # a task could not be published
    )


_KINDS: tuple[tuple[type[BaseException], str], ...] | None = None


def dependency_of(exc: BaseException | None) -> str | None:
    """Which dependency `exc` (or an exception it was raised from) says is unavailable, or None."""
    global _KINDS
    if _KINDS is None:
        _KINDS = _outage_kinds()
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for kind, name in _KINDS:
            if isinstance(exc, kind):
                return name
        exc = exc.__cause__ or exc.__context__
    return None


_NAMES = {"database": "The database (PostgreSQL)", "redis": "Redis", "broker": "The task broker"}


def unavailable(request: HttpRequest, dependency: str, exc: BaseException) -> HttpResponse:
    retry_after = settings.AIOPS_RETRY_AFTER
    DEPENDENCY_UNAVAILABLE.labels(dependency).inc()
    log.warning("dependency_unavailable", dependency=dependency, path=request.path, method=request.method,
                error=f"{type(exc).__name__}: {str(exc).strip()[:300]}")
    message = f"{_NAMES[dependency]} is unavailable; retry in {retry_after} seconds."
    accept = request.headers.get("Accept", "")
    if "text/html" in accept and not request.path.startswith("/api/"):
        response: HttpResponse = HttpResponse(
            "<!doctype html><title>Service unavailable</title><h1>Service unavailable</h1>"
            f"<p>{escape(message)}</p><p>This page will work again once it is back.</p>",
            status=503, content_type="text/html; charset=utf-8",
        )
    elif request.path.startswith("/api/v1/"):
        # The REST API answers every error as an RFC 9457 problem detail; the keys above stay.
        response = JsonResponse({"type": "https://aiops.invalid/problems/unavailable", "title": "Service unavailable",
                                 "status": 503, "detail": message, "error": message, "dependency": dependency,
                                 "retry_after": retry_after}, status=503, content_type="application/problem+json")
    else:
        response = JsonResponse({"error": message, "dependency": dependency, "retry_after": retry_after}, status=503)
    response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store"
    return response


class DependencyOutageMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        dependency = dependency_of(exception)
        if dependency is None:
            return None  # a bug: Django's 500 handling (and its logging) is the right answer
        return unavailable(request, dependency, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """`handler500`: called while the uncaught exception is being handled (sys.exc_info holds it)."""
    exc = sys.exc_info()[1]
    dependency = dependency_of(exc)
    if dependency is not None and exc is not None:
        return unavailable(request, dependency, exc)
    return defaults.server_error(request)
