"""Structured logs with a correlation id that follows a request into every task it causes.

The id comes from the `X-Request-ID` header (or is generated), is returned in the
response, is bound into structlog's context variables for the request, travels as a
Celery message header into every task enqueued while it is bound, and is bound again
in the worker for the task's run (so tasks enqueued by that task carry it too).
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_configured = False


def configure_logging(*, level: str = "INFO", fmt: str = "auto") -> None:
    """JSON lines for machines, colourless key=value text on a terminal."""
    global _configured
    if _configured:
        return
    from agents.redaction import redact_log_event  # a pure module: no Django app needed
    _configured = True
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # Secrets (passwords, tokens, bearer headers, keys) are masked in every log line.
        redact_log_event,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("kubernetes.client.rest", "urllib3", "httpx", "httpcore", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _dumps(obj: Any, **_: Any) -> str:
    import orjson

    return orjson.dumps(obj, default=str).decode()


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return structlog.contextvars.get_contextvars().get("request_id")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        # An id we did not generate is only trusted when it is short and plain (it ends up in logs).
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            response = self.get_response(request)
        finally:
            structlog.contextvars.clear_contextvars()
        response[REQUEST_ID_HEADER] = request_id
        return response


# --- Celery propagation (connected in aiops_site.celery) ----------------------------------


def attach_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """before_task_publish: put the current correlation id on the outgoing message."""
    if headers is None:
        return
    request_id = current_request_id()
    if request_id and "request_id" not in headers:
        headers["request_id"] = request_id


def bind_task_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """task_prerun: bind the message's correlation id (or start one) for the task's run."""
    request = getattr(task, "request", None)
    request_id = getattr(request, "request_id", None)
    if request_id is None and request is not None:
        request_id = (getattr(request, "headers", None) or {}).get("request_id")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        request_id=request_id or task_id or new_request_id(),
        task_id=task_id,
        task=getattr(task, "name", None),
    )


def clear_task_context(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()
