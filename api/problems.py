"""Errors as RFC 9457 problem details (`application/problem+json`), naming the field at fault.

Every refusal the API gives has `type`, `title`, `status` and `detail`; a validation error adds
`errors`, one `{field, message}` per problem (a nested field as `steps[1].tool`). A dependency
outage stays `aiops_site.outage`'s 503 with Retry-After; a bug stays Django's 500.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_handler

PROBLEM_BASE = "https://aiops.invalid/problems/"
CONTENT_TYPE = "application/problem+json"

TITLES = {
    400: "Invalid request",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    415: "Unsupported media type",
    429: "Too many requests",
}
TYPES = {400: "invalid", 401: "unauthenticated", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
         406: "not-acceptable", 409: "conflict", 415: "unsupported-media-type", 429: "throttled"}


class Conflict(exceptions.APIException):
    """The request is valid but the object's state refuses it (already decided, expired)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "the object's state refuses this request"
    default_code = "conflict"


def _flatten(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    if isinstance(detail, dict):
        found: list[dict[str, str]] = []
        for key, value in detail.items():
            name = str(key)
            if name == "non_field_errors":
                name = ""
            path = f"{prefix}.{name}" if prefix and name else (prefix or name)
            found += _flatten(value, path)
        return found
    if isinstance(detail, list):
        if detail and all(isinstance(item, (str, exceptions.ErrorDetail)) for item in detail):
            return [{"field": prefix, "message": str(item)} for item in detail]
        found = []
        for index, item in enumerate(detail):
            if item:
                found += _flatten(item, f"{prefix}[{index}]")
        return found
    return [{"field": prefix, "message": str(detail)}]


def problem(status_code: int, detail: str, *, errors: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + TYPES.get(status_code, "error"),
        "title": TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    response = Response(body, status=status_code, headers=headers, content_type=CONTENT_TYPE)
    return response


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "not found")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or "not allowed")
    if not isinstance(exc, exceptions.APIException):
        return drf_handler(exc, context)  # None: re-raised, for the outage middleware or Django's 500
    headers: dict[str, str] = {}
    response = drf_handler(exc, context)
    if response is not None:
        headers = {key: value for key, value in response.items() if key in ("WWW-Authenticate", "Retry-After", "Allow")}
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        detail = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors)
        return problem(400, detail or "invalid request", errors=errors, headers=headers)
    detail = exc.detail if isinstance(exc.detail, str) else "; ".join(e["message"] for e in _flatten(exc.detail))
    return problem(exc.status_code, str(detail), headers=headers)


def not_found(request: Any, exception: Exception | None = None) -> Any:
    """The root URLconf's `handler404`: under /api/v1/ a problem detail (a path no route matches,
    such as an id that is not a number), elsewhere Django's page."""
    from django.http import JsonResponse
    from django.views import defaults

    if request.path.startswith("/api/v1/"):
        return JsonResponse({"type": PROBLEM_BASE + TYPES[404], "title": TITLES[404], "status": 404,
                             "detail": f"no such resource: {request.path[:200]}"}, status=404, content_type=CONTENT_TYPE)
    return defaults.page_not_found(request, exception)  # type: ignore[arg-type]
