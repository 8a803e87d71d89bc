"""Who may do what through the API: a token's scope is a ceiling, the user's own right decides.

There is one permission model for chat, the console, the admin and this API, and this module
adds no rule to it. Each right is the function the other doors call:

| right | decided by | also used by |
|---|---|---|
| read incidents, runs, approvals, rules, playbooks, tools, clusters; ask | any active user | console (login), chat (linked identity) |
| decide an approval | `agents.approvals.can_decide` (inside `decide_approval`) | chat, console |
| close an incident, start or cancel its playbook | `playbooks.services.manual.may_act_on` | chat, console |
| change rules and playbooks | Django model permissions (`playbooks.change_rule`, ...) | admin |
| change clusters, read the audit log | Django model permissions (`k8s.change_cluster`, `agents.view_auditentry`) | admin |

A token adds its scope on top (`read`, `decide`, `write`, `admin`; `admin` holds all, the
others include `read`); session sign-in (the console's) carries every scope, so a person in the
browser has exactly their own rights.
"""

from __future__ import annotations

from typing import Any

from rest_framework import permissions

from api.models import ApiToken, Scope

SAFE = ("GET", "HEAD", "OPTIONS")


def scope_of(request: Any, view: Any) -> str:
    """The scope an endpoint needs: the view's `scopes` by action, else read for safe methods."""
    action = getattr(view, "action", None) or request.method.lower()
    scopes = getattr(view, "scopes", {})
    if action in scopes:
        return str(scopes[action])
    if request.method in SAFE:
        return str(Scope.READ)
    return str(getattr(view, "write_scope", Scope.WRITE))


def model_permissions(request: Any, view: Any) -> list[str]:
    """Django permissions the user needs for this action (the admin's own check), if any."""
    perms = getattr(view, "model_perms", {})
    action = getattr(view, "action", None) or request.method.lower()
    return list(perms.get(action, ()))


class ScopedAccess(permissions.BasePermission):
    """Signed in (token or session), the token holds the scope, and the user holds the Django
    permissions the admin would ask for. Object-level rights (deciding an approval, acting on an
    incident) are the services' own checks, which refuse with a reason and audit the refusal."""

    message = "not allowed"

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if user is None or not user.is_authenticated or not user.is_active:
            return False
        scope = scope_of(request, view)
        token = request.auth if isinstance(request.auth, ApiToken) else None
        if token is not None and not token.allows(scope):
            self.message = f"API token {token.prefix} lacks the {scope!r} scope (it has: {', '.join(token.scopes)})"
            return False
        missing = [perm for perm in model_permissions(request, view) if not user.has_perm(perm)]
        if missing:
            self.message = f"{user.get_username()} lacks the permission {', '.join(missing)}"
            return False
        return True
