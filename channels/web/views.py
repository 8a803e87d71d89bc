"""The web console at /console/ (behind Django login): open incidents, playbook runs, pending
approvals with buttons, the notification feed, and a chat box on the same router as the chat
platforms, so the embedded demo is usable with no external account."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.contrib import messages as flash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required as _login_required
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from channels import router
from channels.inbound import Inbound, record_update
from channels.models import InboundUpdate, Kind, OutboundMessage
from channels.web.formatting import to_html

MAX_CHAT_TEXT = 4000
LOGIN_URL = "/console/login/"
# Approvers are ordinary users, not staff: they sign in here, not through the admin's login.
login_required = _login_required(login_url=LOGIN_URL)


class ConsoleLogin(auth_views.LoginView):
    template_name = "console/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        return "/console/"


def _address(request: HttpRequest) -> str:
    return f"user:{request.user.pk}"


def _inbound(request: HttpRequest, text: str, update_id: int | None) -> Inbound:
    address = _address(request)
    return Inbound(kind=Kind.WEB, address=address, conversation=address, platform_user_id=str(request.user.pk),
                   user=request.user, text=text, update_id=update_id)


def _transcript(request: HttpRequest, limit: int = 40) -> list[dict[str, Any]]:
    """The person's console conversation: what they typed and what came back, oldest first."""
    from agents.models import Approval

    address = _address(request)
    since = timezone.now() - timedelta(days=7)
    said = [
        {"at": u.received_at, "who": "you", "html": to_html(u.text), "approval": None}
        for u in InboundUpdate.objects.filter(platform=Kind.WEB, user=request.user, received_at__gte=since)
        .order_by("-received_at")[:limit]
    ]
    replies = list(
        OutboundMessage.objects.filter(kind=Kind.WEB, address=address, operation="send", created_at__gte=since)
        .order_by("-created_at")[:limit]
    )
    approvals = {a.pk: a for a in Approval.objects.filter(pk__in=[m.approval_id for m in replies if m.approval_id])}
    heard = [
        {"at": m.created_at, "who": "aiops", "html": to_html(m.text),
         "approval": approvals.get(m.approval_id) if m.payload.get("buttons") else None}
        for m in replies
    ]
    return sorted(said + heard, key=lambda item: item["at"])[-limit:]


def _context(request: HttpRequest) -> dict[str, Any]:
    from agents.models import Approval
    from playbooks.models import Incident, PlaybookRun

    recent = timezone.now() - timedelta(hours=24)
    return {
        "pending": list(Approval.objects.filter(state=Approval.State.PENDING).order_by("requested_at")[:50]),
        "decided": list(Approval.objects.exclude(state=Approval.State.PENDING).filter(requested_at__gte=recent)
                        .select_related("decided_by").order_by("-decided_at")[:10]),
        "incidents": list(Incident.objects.filter(Q(state=Incident.State.OPEN) | Q(resolved_at__gte=recent))
                          .select_related("cluster").order_by("state", "-opened_at")[:30]),
        "runs": list(PlaybookRun.objects.select_related("incident").order_by("-created_at")[:15]),
        "feed": [
            {"at": m.created_at, "html": to_html(m.text)}
            for m in OutboundMessage.objects.filter(kind=Kind.WEB, address="feed", operation="send")
            .order_by("-created_at")[:15]
        ],
        "transcript": _transcript(request),
    }


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    template = "console/_live.html" if request.GET.get("partial") == "live" else "console/home.html"
    return render(request, template, _context(request))


@login_required
@require_GET
def incident(request: HttpRequest, incident_id: int) -> HttpResponse:
    from playbooks.models import Incident

    found = get_object_or_404(Incident.objects.select_related("cluster"), pk=incident_id)
    runs = found.runs.prefetch_related("steps").order_by("-created_at")
    return render(request, "console/incident.html", {"incident": found, "runs": runs})


@login_required
@require_POST
def decide(request: HttpRequest, approval_id: int) -> HttpResponse:
    decision = request.POST.get("decision", "")
    if decision not in ("approve", "reject"):
        return HttpResponseBadRequest(f"decision must be 'approve' or 'reject', not {decision!r}")
    reason = request.POST.get("reason", "").strip()[:2000]
    with transaction.atomic(durable=True):
        outcome = router.decide(_inbound(request, f"{decision} #{approval_id}", None), approval_id, decision, reason)
    (flash.error if outcome.startswith("Refused") else flash.success)(request, outcome.replace("`", ""))
    return redirect("channels:console")


@login_required
@require_POST
def chat(request: HttpRequest) -> HttpResponse:
    text = request.POST.get("text", "").strip()
    if not text:
        return HttpResponseBadRequest("the message is empty")
    if len(text) > MAX_CHAT_TEXT:
        return HttpResponseBadRequest(f"the message is longer than {MAX_CHAT_TEXT} characters")
    with transaction.atomic(durable=True):
        stored = record_update(Kind.WEB, uuid.uuid4().hex, user=request.user, address=_address(request), text=text)
        assert stored is not None  # a fresh uuid cannot collide
        router.handle(_inbound(request, text, stored.pk))
    if request.headers.get("X-Requested-With") == "fetch":
        return chat_messages(request)
    return redirect("/console/#chat")


@login_required
def chat_messages(request: HttpRequest) -> HttpResponse:
    return render(request, "console/_chat.html", {"transcript": _transcript(request)})
