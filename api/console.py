"""The console's API tokens page (/console/tokens): a person creates tokens for themself (the
clear text is shown on the answer page once, never again), sees their tokens' state and last
use, and revokes them. The admin does the same for anyone (`api.admin`)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from api.models import ApiToken, Scope
from api.tokens import MAX_DAYS, TokenRefused, create_token, revoke_token, tokens_of

LOGIN_URL = "/console/login/"
DEFAULT_DAYS = 90


def _context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    return {"tokens": tokens_of(request.user), "scopes": Scope.choices, "max_days": MAX_DAYS,
            "default_days": DEFAULT_DAYS, **extra}


@login_required(login_url=LOGIN_URL)
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return render(request, "console/tokens.html", _context(request))
    name = request.POST.get("name", "").replace("\x00", "").strip()
    scopes = [scope for scope in request.POST.getlist("scopes") if scope]
    raw_days = request.POST.get("days", "").strip()
    try:
        days = int(raw_days)
    except ValueError:
        days = -1
    try:
        token, clear = create_token(request.user, name, scopes, days, by=request.user, via="console")
    except TokenRefused as exc:
        return render(request, "console/tokens.html",
                      _context(request, error=f"No token was created: {exc}.", name=name[:100], chosen=scopes),
                      status=400)
    # Shown on this answer only: the page is not cached, and the token is not stored in clear.
    response = render(request, "console/tokens.html", _context(request, created=token, clear=clear))
    response["Cache-Control"] = "no-store"
    return response


@login_required(login_url=LOGIN_URL)
@require_POST
def revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
    if revoke_token(token, by=request.user, via="console"):
        flash.success(request, f"Revoked token {token.prefix} ({token.name}); it no longer works.")
    else:
        flash.error(request, f"Token {token.prefix} was already revoked.")
    return redirect("api-console-tokens")
