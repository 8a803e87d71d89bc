"""Personal API tokens: shown once, stored as a SHA-256 digest, with scopes and an expiry.

A token is `aiops_<prefix>_<secret>`: the prefix (8 characters, stored in clear) names the token
in lists and in the audit log; the whole token is never stored. A digest of a 160-bit random
secret needs no slow hash (nothing to brute-force), so a request costs one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

__all__ = ["ApiToken", "Scope", "digest"]

TOKEN_PREFIX = "aiops_"


class Scope(models.TextChoices):
    READ = "read", "read: list and read everything the console shows"
    DECIDE = "decide", "decide: approvals, closing incidents, starting and cancelling runs"
    WRITE = "write", "write: rules and playbooks (create, change, delete, import)"
    ADMIN = "admin", "admin: clusters and the audit log"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def usable(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True, expires_at__gt=timezone.now(), user__is_active=True)


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for (CI, status page, ...).")
    prefix = models.CharField(max_length=8, unique=True, editable=False, help_text="Names the token; not a secret.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, help_text="Any of read, decide, write, admin.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"
        constraints = [
            models.CheckConstraint(condition=models.Q(expires_at__gt=models.F("created_at")),
                                   name="api_token_expires_after_creation"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…, {self.user})"

    @property
    def label(self) -> str:
        return f"token {self.prefix}"

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "active"

    def allows(self, scope: str) -> bool:
        """`admin` holds every scope; `decide` and `write` include `read`."""
        held = set(self.scopes or [])
        if Scope.ADMIN in held:
            return True
        if scope == Scope.READ:
            return bool(held)
        return scope in held

    @classmethod
    def issue(cls, user: Any, name: str, scopes: list[str], days: int) -> tuple[ApiToken, str]:
        """A new token and its clear text, which is shown to its owner once and never again."""
        while True:
            prefix = secrets.token_hex(4)
            if not cls.objects.filter(prefix=prefix).exists():
                break
        clear = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(24)}"
        token = cls.objects.create(user=user, name=name, prefix=prefix, digest=digest(clear),
                                   scopes=sorted(set(scopes)), expires_at=timezone.now() + timedelta(days=days))
        return token, clear
