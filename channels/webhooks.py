"""Pieces every inbound webhook view shares: the disabled-platform 404, JSON errors with a
reason, and counting each request's outcome."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

import structlog
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from channels import metrics
from channels.transport import is_enabled

log = structlog.get_logger(__name__)


class Rejected(Exception):
    """The request is refused with `status` and a reason the sender can read."""

    def __init__(self, status: int, reason: str, outcome: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.outcome = outcome


def unauthorized(reason: str) -> Rejected:
    return Rejected(401, reason, "unauthorized")


def bad_request(reason: str) -> Rejected:
    return Rejected(400, reason, "bad_request")


def webhook(platform: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """A platform's inbound endpoint: POST only, no CSRF (the platform signs it instead), 404
    while the platform is not configured, and every outcome counted and logged."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @require_POST
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not is_enabled(platform):
                metrics.INBOUND_WEBHOOKS.labels(platform, "disabled").inc()
                raise Http404(f"{platform} is not configured")
            try:
                response = view(request, *args, **kwargs)
            except Rejected as exc:
                metrics.INBOUND_WEBHOOKS.labels(platform, exc.outcome).inc()
                log.warning("inbound_rejected", platform=platform, status=exc.status, reason=exc.reason)
                return JsonResponse({"ok": False, "error": exc.reason}, status=exc.status)
            if not getattr(response, "duplicate", False):
                metrics.INBOUND_WEBHOOKS.labels(platform, "accepted").inc()
            return response

        return wrapper

    return decorate


def duplicate(response: HttpResponse) -> HttpResponse:
    response.duplicate = True  # type: ignore[attr-defined]  (counted by record_update already)
    return response


def obj(value: Any, where: str) -> dict[str, Any]:
    """A JSON object field of a sender's payload: absent or null is empty; anything else is a 400."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"{where} must be a JSON object")
    return value


def array(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request(f"{where} must be a JSON array")
    return value


def without_nul(value: Any) -> Any:
    """`value` with every NUL character in its strings (keys included) replaced by U+FFFD.

    JSON may carry \\u0000; PostgreSQL text and jsonb cannot hold it, so a message with one
    would fail to be stored (a 500). The replacement keeps the rest of what was sent.
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    return value


def json_body(request: HttpRequest) -> dict[str, Any]:
    import json

    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    return without_nul(data) if b"\\u0000" in request.body else data
