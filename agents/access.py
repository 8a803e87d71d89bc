"""Refused access is audited: a chat user we cannot tie to an account, and a login lockout.

The audit log says what the agent did and what it would not do. Besides refused tool calls and
approval decisions (written where they are refused), two doors refuse people before any of that:
the chat router, for a platform user no admin has linked to an account, and the sign-in form,
once django-axes locks a user name out after repeated wrong passwords. Each refusal is one
`access_refused` entry naming who knocked, where, and what they tried.
"""

from __future__ import annotations

from typing import Any

import structlog
from django.dispatch import receiver

from agents.models import AuditEntry

log = structlog.get_logger(__name__)


def audit_access_refused(*, actor: str, where: str, attempted: str, reason: str) -> AuditEntry:
    entry = AuditEntry.objects.create(
        actor=actor[:200], action=AuditEntry.Action.ACCESS_REFUSED, outcome="refused",
        reason=attempted[:2000], detail=f"{where}: {reason}"[:4000],
    )
    log.warning("access_refused", actor=actor, where=where, reason=reason)
    return entry


def axes_username(request: Any, credentials: dict[str, Any] | None = None) -> str:
    """The user name django-axes counts failures under (AXES_USERNAME_CALLABLE): what was typed,
    bounded to a user name's 150 characters and without NUL, which its varchar(255) column and
    PostgreSQL refuse (a 300-character name was a 500 before)."""
    value = (credentials or {}).get("username")
    if value is None and request is not None:
        value = getattr(request, "POST", {}).get("username")
    return str(value or "").replace("\x00", "\ufffd")[:150]


def _login_locked_out(sender: Any, request: Any = None, username: str | None = None, ip_address: str | None = None,
                      **kwargs: Any) -> None:
    path = getattr(request, "path", "") or "login"
    audit_access_refused(actor=f"login:{username or '?'}", where=path,
                         attempted=f"sign in as {username or '(no user name)'} from {ip_address or 'an unknown address'}",
                         reason="locked out after repeated wrong passwords")


def connect() -> None:
    """Called from AgentsConfig.ready(): django-axes announces each lockout by a signal."""
    from axes.signals import user_locked_out

    receiver(user_locked_out, dispatch_uid="agents.access.login_locked_out")(_login_locked_out)
