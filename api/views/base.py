"""What every API view shares: authentication (token, then the console's session), the scoped
permission, per-token throttling, cursor pages, problem-detail errors, and one audit entry per
change made through the API, naming the user and the token."""

from __future__ import annotations

from typing import Any

import orjson
import redis
import structlog
from django.conf import settings
from django.core.cache import caches
from rest_framework import authentication, pagination, renderers, throttling, viewsets
from rest_framework.parsers import JSONParser

from api.models import ApiToken
from api.permissions import SAFE, ScopedAccess
from api.tokens import TokenAuthentication, actor

log = structlog.get_logger(__name__)


class CursorPage(pagination.CursorPagination):
    """Stable pages however fast rows arrive: newest first, by id (never repeats or skips a row)."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500


class TokenThrottle(throttling.SimpleRateThrottle):
    """AIOPS_API_RATE per token (per user for the console's session, per address when anonymous),
    counted in Redis so every web process shares one count. Redis down: not throttled (logged);
    the API keeps serving what PostgreSQL holds."""

    scope = "api"
    cache = caches["api"]

    def get_rate(self) -> str:
        return settings.AIOPS_API_RATE

    def get_cache_key(self, request: Any, view: Any) -> str:
        token = request.auth
        if isinstance(token, ApiToken):
            ident = f"token:{token.pk}"
        elif request.user is not None and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"addr:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except redis.RedisError as exc:
            log.warning("api_throttle_unavailable", error=str(exc)[:200])
            return True


class OrjsonRenderer(renderers.JSONRenderer):
    """JSON through orjson (the project's hot-path JSON), UTF-8, no spaces."""

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if data is None:
            return b""
        return orjson.dumps(data, default=str)


class ApiViewSet(viewsets.GenericViewSet):
    # The console's sign-in works too (with Django's CSRF check on changes).
    authentication_classes = [TokenAuthentication, authentication.SessionAuthentication]
    permission_classes = [ScopedAccess]
    throttle_classes = [TokenThrottle]
    pagination_class = CursorPage
    renderer_classes = [OrjsonRenderer]
    parser_classes = [JSONParser]
    metadata_class = None  # OPTIONS: 405 (the schema documents every endpoint)
    # Ids are bigints: anything else is a 404 before it reaches the database.
    lookup_value_regex = "[0-9]{1,18}"
    # action -> scope; unnamed actions: read when safe, else `write_scope`.
    scopes: dict[str, str] = {}
    # action -> Django permissions the admin would ask for.
    model_perms: dict[str, tuple[str, ...]] = {}

    def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        # Every use of a token is attributed to its user, reads included (a script's reads are
        # what an auditor asks about first); the console's session reads are its own pages.
        if (request.method not in SAFE or isinstance(getattr(request, "auth", None), ApiToken)) \
                and getattr(request, "user", None) is not None and request.user.is_authenticated:
            self._audit_call(request, response)
        return response

    def _audit_call(self, request: Any, response: Any) -> None:
        from agents.models import AuditEntry

        token = request.auth if isinstance(request.auth, ApiToken) else None
        outcome = "ok" if response.status_code < 400 else ("refused" if response.status_code in (401, 403) else "error")
        AuditEntry.objects.create(
            actor=actor(request)[:200], action=AuditEntry.Action.API_CALL, outcome=outcome,
            reason=f"{request.method} {request.path}"[:2000],
            detail=f"{request.method} {request.path} -> {response.status_code}"[:4000],
            arguments={"method": request.method, "path": request.path[:500], "status": response.status_code,
                       "token": token.prefix if token else None, "user": request.user.get_username()},
        )
