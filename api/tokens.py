"""Issuing, revoking and checking API tokens, and attributing their use in the audit log.

Who may do what is not decided here: a token's scopes are a ceiling on its user's own rights,
which the same functions as everywhere else decide (`api.permissions`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework import authentication, exceptions

from api.models import TOKEN_PREFIX, ApiToken, Scope, digest

log = structlog.get_logger(__name__)

MAX_DAYS = 365
# last_used_at is written at most this often per token: a busy script must not turn every read
# into a row update.
TOUCH_EVERY_SECONDS = 60


class TokenRefused(ValueError):
    """A token could not be issued as asked; the message says why, for people to read."""


def _audit(actor: str, outcome: str, detail: str, **arguments: Any) -> None:
    from agents.models import AuditEntry

    AuditEntry.objects.create(actor=actor[:200], action=AuditEntry.Action.API_TOKEN, outcome=outcome,
                              detail=detail[:4000], arguments=arguments)


def create_token(user: Any, name: str, scopes: list[str], days: int, *, by: Any, via: str) -> tuple[ApiToken, str]:
    """A new token for `user` (issued by `by`, the same person in the console, an admin in the
    admin); returns it with its clear text, which is never shown again."""
    name = (name or "").strip()
    if not name:
        raise TokenRefused("a token needs a name saying what it is for")
    if len(name) > 100:
        raise TokenRefused("the name is longer than 100 characters")
    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown or not scopes:
        raise TokenRefused(f"scopes must be some of {', '.join(Scope.values)}"
                           + (f"; not {', '.join(map(repr, unknown))}" if unknown else ""))
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
        raise TokenRefused(f"the token must expire in 1 to {MAX_DAYS} days, not {days!r}")
    if user is None or not user.is_active:
        raise TokenRefused("tokens are issued only to active users")
    with transaction.atomic():
        token, clear = ApiToken.issue(user, name, scopes, days)
        who = by.get_username() if by is not None else "system"
        _audit(f"{via}:{who}", "created", f"API token {token.prefix} ({name}) for {user.get_username()}, scopes "
               f"{', '.join(token.scopes)}, expires {token.expires_at:%Y-%m-%d %H:%M} UTC",
               token=token.prefix, user=user.get_username(), scopes=token.scopes)
    log.info("api_token_created", prefix=token.prefix, user=user.get_username(), scopes=token.scopes, by=who, via=via)
    return token, clear


def revoke_token(token: ApiToken, *, by: Any, via: str) -> bool:
    """Revoke at once; False if it was revoked already."""
    who = by.get_username() if by is not None else "system"
    with transaction.atomic():
        changed = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if changed:
            _audit(f"{via}:{who}", "revoked", f"API token {token.prefix} ({token.name}) of "
                   f"{token.user.get_username()} revoked", token=token.prefix, user=token.user.get_username())
    if changed:
        log.info("api_token_revoked", prefix=token.prefix, by=who, via=via)
    return bool(changed)


def tokens_of(user: Any) -> Any:
    return ApiToken.objects.filter(user=user).order_by("-created_at")


def actor(request: Any) -> str:
    """How the audit log names who made an API request: the user, and the token when one was used."""
    user = getattr(request, "user", None)
    name = user.get_username() if user is not None and user.is_authenticated else "anonymous"
    token = getattr(request, "auth", None)
    return f"api:{name} ({token.label})" if isinstance(token, ApiToken) else f"api:{name}"


def via(request: Any) -> str:
    """The door, as the services' own audit entries name it: `api`, and the token when one was used."""
    token = getattr(request, "auth", None)
    return f"api ({token.label})" if isinstance(token, ApiToken) else "api"


class TokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer aiops_…`. A missing header leaves the request to session auth; a
    token that is unknown, expired or revoked is a 401 (the last two audited)."""

    def authenticate(self, request: Any) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        value = value.strip()
        if not value.startswith(TOKEN_PREFIX) or " " in value or len(value) > 200:
            raise exceptions.AuthenticationFailed("the bearer token is not an AIOps API token (aiops_…)")
        token = ApiToken.objects.select_related("user").filter(digest=digest(value)).first()
        if token is None:
            log.info("api_token_refused", reason="unknown")
            raise exceptions.AuthenticationFailed("unknown API token")
        state = token.state if token.user.is_active else "inactive user"
        if state != "active":
            from agents.access import audit_access_refused

            audit_access_refused(actor=f"api:{token.user.get_username()} ({token.label})", where="api",
                                 attempted=f"{request.method} {request.path}"[:300], reason=f"the token is {state}")
            raise exceptions.AuthenticationFailed(f"API token {token.prefix} is {state}")
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() >= TOUCH_EVERY_SECONDS:
            ApiToken.objects.filter(pk=token.pk).filter(
                Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - timedelta(seconds=TOUCH_EVERY_SECONDS))
            ).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="aiops"'
