"""The web console at /console/ (behind Django login): the incidents list (filters, search,
pages), the incident page (header, actions, one timeline, the RCA report), pending approvals
with buttons, the notification feed, and a chat box on the same router as the chat platforms,
so the embedded demo is usable with no external account.

Live parts are htmx partials: each polls its own URL with the digest of what it shows and gets
204 (nothing to swap) until that changes, so an expanded step output or a half-typed message is
never lost to a refresh."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import timedelta
from typing import Any

from django.contrib import messages as flash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required as _login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Prefetch, Q
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from channels import router
from channels.formatting import FINDING_WORDS, incident_what, incident_workload, rca_report, words
from channels.inbound import Inbound, record_update
from channels.models import InboundUpdate, Kind, Operation, OutboundMessage
from channels.web.family import family
from channels.web.formatting import to_html
from channels.web.timeline import pod_states, timeline
from channels.webhooks import without_nul

MAX_CHAT_TEXT = 4000
LOGIN_URL = "/console/login/"
PAGE_SIZE = 25
FEED_PAGE_SIZE = 30
# Approvers are ordinary users, not staff: they sign in here, not through the admin's login.
login_required = _login_required(login_url=LOGIN_URL)
_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="[^"]*"')


class ConsoleLogin(auth_views.LoginView):
    template_name = "console/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        return "/console/"


def root(request: HttpRequest) -> HttpResponse:
    """`/`, the address `make run` prints first: the console (its login when signed out)."""
    return redirect("channels:console")


# --- live partials ----------------------------------------------------------------------------
def live(request: HttpRequest, template: str, context: dict[str, Any], *, element_id: str, url: str,
         every: str = "3s") -> HttpResponse | str:
    """A polled region: `<div id hx-get=url?v=digest>inner</div>`. Asked again with the digest of
    what the page already shows, it answers 204, which htmx does not swap."""
    inner = render_to_string(template, context, request=request)
    digest = hashlib.sha256(_CSRF_INPUT.sub("", inner).encode()).hexdigest()[:16]
    if request.GET.get("v") == digest and request.htmx:
        return HttpResponse(status=204)
    joiner = "&" if "?" in url else "?"
    return format_html(
        '<div id="{}" class="live" hx-get="{}{}v={}" hx-trigger="every {}, console-refresh from:body" '
        'hx-swap="outerHTML">{}</div>',
        element_id, url, joiner, digest, every, inner,
    )


def _partial(request: HttpRequest, rendered: HttpResponse | str) -> HttpResponse:
    return rendered if isinstance(rendered, HttpResponse) else HttpResponse(rendered)


# --- who may act --------------------------------------------------------------------------------
# Closing an incident, starting or cancelling its playbook: `playbooks.services.manual.may_act_on`,
# the one rule chat, this console, the admin and the REST API share (the approvers of the rule
# that runs for it, else the approvers group).


def _may_act_on(user: Any, incident: Any) -> bool:
    from playbooks.services.manual import may_act_on

    return may_act_on(user, incident)


def _address(request: HttpRequest) -> str:
    return f"user:{request.user.pk}"


def _inbound(request: HttpRequest, text: str, update_id: int | None) -> Inbound:
    address = _address(request)
    return Inbound(kind=Kind.WEB, address=address, conversation=address, platform_user_id=str(request.user.pk),
                   user=request.user, text=text, update_id=update_id)


def _latest_text(message: OutboundMessage) -> str:
    """A message as its latest edit says (a decided approval's copy), else as sent."""
    edits = [e for e in message.edits.all() if e.operation == Operation.EDIT and e.state != "failed"]
    return edits[-1].text if edits else message.text


def _sent(queryset: Any) -> Any:
    return queryset.filter(operation=Operation.SEND).prefetch_related(
        Prefetch("edits", queryset=OutboundMessage.objects.order_by("id")))


# --- chat ---------------------------------------------------------------------------------------
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
    replies = list(_sent(OutboundMessage.objects.filter(kind=Kind.WEB, address=address, created_at__gte=since))
                   .order_by("-created_at")[:limit])
    approvals = {a.pk: a for a in Approval.objects.filter(pk__in=[m.approval_id for m in replies if m.approval_id])}
    heard = [
        {"at": m.created_at, "who": "aiops", "html": to_html(_latest_text(m)),
         "approval": approvals.get(m.approval_id) if m.payload.get("buttons") else None}
        for m in replies
    ]
    return sorted(said + heard, key=lambda item: item["at"])[-limit:]


def _chat_live(request: HttpRequest) -> HttpResponse | str:
    return live(request, "console/_chat.html", {"transcript": _transcript(request)}, element_id="transcript",
                url="/console/chat/messages")


@login_required
@require_POST
def chat(request: HttpRequest) -> HttpResponse:
    text = without_nul(request.POST.get("text", "")).strip()
    if not text:
        return HttpResponseBadRequest("the message is empty")
    if len(text) > MAX_CHAT_TEXT:
        return HttpResponseBadRequest(f"the message is longer than {MAX_CHAT_TEXT} characters")
    with transaction.atomic(durable=True):
        stored = record_update(Kind.WEB, uuid.uuid4().hex, user=request.user, address=_address(request), text=text)
        assert stored is not None  # a fresh uuid cannot collide
        router.handle(_inbound(request, text, stored.pk))
    if request.htmx or request.headers.get("X-Requested-With") == "fetch":
        return _partial(request, _chat_live(request))
    return redirect("/console/#chat")


@login_required
@require_GET
def chat_messages(request: HttpRequest) -> HttpResponse:
    return _partial(request, _chat_live(request))


# --- approvals ----------------------------------------------------------------------------------
def _approvals_context(request: HttpRequest) -> dict[str, Any]:
    from agents.approvals import can_decide
    from agents.models import Approval

    recent = timezone.now() - timedelta(hours=24)
    pending = list(Approval.objects.filter(state=Approval.State.PENDING).order_by("requested_at")[:50])
    incident_of = _incidents_of(pending)
    return {
        "pending": [{"approval": a, "may_decide": can_decide(request.user, a), "incident": incident_of.get(a.pk)}
                    for a in pending],
        "decided": list(Approval.objects.exclude(state=Approval.State.PENDING).filter(requested_at__gte=recent)
                        .select_related("decided_by").order_by("-decided_at")[:8]),
    }


def _incidents_of(approvals: list[Any]) -> dict[int, Any]:
    from playbooks.models import StepRun

    steps = StepRun.objects.filter(approval__in=approvals).select_related("run__incident")
    return {s.approval_id: s.run.incident for s in steps}


def _approvals_live(request: HttpRequest) -> HttpResponse | str:
    return live(request, "console/_approvals.html", _approvals_context(request), element_id="approvals",
                url="/console/approvals")


@login_required
@require_GET
def approvals(request: HttpRequest) -> HttpResponse:
    return _partial(request, _approvals_live(request))


def _back(request: HttpRequest, default: str = "/console/") -> HttpResponse:
    target = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = default
    return redirect(target)


def _answer(request: HttpRequest, outcome: str, ok: bool) -> HttpResponse:
    """htmx: the outcome as a status line, and every live region refreshed; else a redirect back."""
    if request.htmx:
        html = render_to_string("console/_flash.html", {"flashes": [{"tags": "success" if ok else "error",
                                                                      "text": outcome}]})
        response = HttpResponse(html)
        response["HX-Trigger"] = "console-refresh"
        return response
    (flash.success if ok else flash.error)(request, outcome)
    return _back(request)


@login_required
@require_POST
def decide(request: HttpRequest, approval_id: int) -> HttpResponse:
    decision = request.POST.get("decision", "")
    if decision not in ("approve", "reject"):
        return HttpResponseBadRequest(f"decision must be 'approve' or 'reject', not {decision!r}")
    reason = request.POST.get("reason", "").strip()[:2000]
    with transaction.atomic(durable=True):
        outcome = router.decide(_inbound(request, f"{decision} #{approval_id}", None), approval_id, decision, reason)
    return _answer(request, outcome.replace("`", ""), not outcome.startswith("Refused"))


# --- incidents ----------------------------------------------------------------------------------
FILTERS = ("state", "severity", "cluster", "namespace", "type", "source", "q")


def _fixed_choices() -> dict[str, list[tuple[str, str]]]:
    from playbooks.models import Incident

    return {
        "state": list(Incident.State.choices),
        "severity": list(Incident.Severity.choices),
        "source": list(Incident.Source.choices),
    }


def _choices() -> dict[str, list[tuple[str, str]]]:
    """The filter form's options; the ones read from the data only for the full page (a live
    refresh of the list needs none of them)."""
    from k8s.models import Cluster
    from playbooks.models import Incident

    types = sorted({t for t in Incident.objects.values_list("primary_type", flat=True).distinct() if t})
    alerts = sorted({a for a in Incident.objects.values_list("alertname", flat=True).distinct() if a})
    return {
        **_fixed_choices(),
        "cluster": [(name, name) for name in Cluster.objects.order_by("name").values_list("name", flat=True)],
        "namespace": [(n, n) for n in Incident.objects.exclude(namespace="").order_by("namespace")
                      .values_list("namespace", flat=True).distinct()],
        "type": [(t, words(t, FINDING_WORDS)) for t in types] + [(a, f"alert {a}") for a in alerts],
    }


class BadFilter(ValueError):
    pass


def _filtered(params: Any) -> tuple[Any, dict[str, str]]:
    from playbooks.models import Incident

    choices = _fixed_choices()
    chosen = {name: (params.get(name) or "").strip() for name in FILTERS}
    for name in ("state", "severity", "source"):
        allowed = [value for value, _ in choices[name]]
        if chosen[name] and chosen[name] not in allowed:
            raise BadFilter(f"{name} must be one of {', '.join(allowed)}; not {chosen[name]!r}")
    if len(chosen["q"]) > 200:
        raise BadFilter("the search is longer than 200 characters")
    found = Incident.objects.select_related("cluster")
    if chosen["state"]:
        found = found.filter(state=chosen["state"])
    if chosen["severity"]:
        found = found.filter(severity=chosen["severity"])
    if chosen["source"]:
        found = found.filter(source=chosen["source"])
    if chosen["cluster"]:
        found = found.filter(cluster__name=chosen["cluster"])
    if chosen["namespace"]:
        found = found.filter(namespace=chosen["namespace"])
    if chosen["type"]:
        found = found.filter(Q(primary_type=chosen["type"]) | Q(finding_types__contains=[chosen["type"]])
                             | Q(alertname=chosen["type"]))
    if chosen["q"]:
        q = chosen["q"]
        found = found.filter(Q(workload_name__icontains=q) | Q(namespace__icontains=q) | Q(alertname__icontains=q)
                             | Q(title__icontains=q) | Q(workload_kind__iexact=q))
    return found.order_by("state", "-opened_at", "-id"), chosen


def _incident_rows(page: Any) -> list[dict[str, Any]]:
    return [{"incident": i, "what": incident_what(i), "workload": incident_workload(i)} for i in page]


def _incidents_context(request: HttpRequest) -> dict[str, Any]:
    found, chosen = _filtered(request.GET)
    page = Paginator(found, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("v", None)
    query.pop("page", None)
    return {"page": page, "rows": _incident_rows(page), "chosen": chosen,
            "query": query.urlencode(), "filtered": any(chosen.values())}


def _incidents_live(request: HttpRequest, context: dict[str, Any]) -> HttpResponse | str:
    url = "/console/incidents?" + "&".join(p for p in (context["query"], f"page={context['page'].number}") if p)
    return live(request, "console/_incidents.html", context, element_id="incident-results", url=url, every="5s")


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    try:
        incidents_context = _incidents_context(request)
    except BadFilter as exc:
        return HttpResponseBadRequest(str(exc))
    feed = [{"at": m.created_at, "html": to_html(_latest_text(m))}
            for m in _sent(OutboundMessage.objects.filter(kind=Kind.WEB, address="feed")).order_by("-created_at", "-id")[:5]]
    return render(request, "console/home.html", {
        **incidents_context,
        "choices": _choices(),
        "approvals_live": _approvals_live(request),
        "incidents_live": _incidents_live(request, incidents_context),
        "chat_live": _chat_live(request),
        "feed": feed,
    })


@login_required
@require_GET
def incidents(request: HttpRequest) -> HttpResponse:
    try:
        context = _incidents_context(request)
    except BadFilter as exc:
        return HttpResponseBadRequest(str(exc))
    return _partial(request, _incidents_live(request, context))


def _incident_context(request: HttpRequest, found: Any) -> dict[str, Any]:
    from channels.web.quiet import quiet_context

    lines, approvals_ = timeline(found, request.user)
    runs = list(found.runs.all())
    return {
        "incident": found,
        "what": incident_what(found),
        "workload": incident_workload(found),
        "pods": pod_states(found),
        "lines": lines,
        "report": rca_report(found.rca_report),
        "runs": runs,
        "proposed": [r for r in runs if r.state == "proposed"],
        "waiting": [line for line in lines if line.approval is not None],
        "may_act": _may_act_on(request.user, found),
        "no_run": _no_run_text(found, runs),
        "may_start": found.is_open and not any(r.state != "finished" for r in runs),
        "outcomes": _outcomes(found, runs),
        "now": timezone.now(),
        **family(found),  # correlation: its parent incident, or its children
        **quiet_context(found),  # silenced by ..., in maintenance ...
    }


def _outcomes(incident: Any, runs: list[Any]) -> str:
    """Per-workload and per-rule outcome figures, in words."""
    from playbooks.history import figures_text, outcome_figures, workload_runs

    text = f"This workload: {figures_text(outcome_figures(workload_runs(incident)))}"
    rule = next((run.rule for run in runs if run.rule_id), None)
    if rule is not None:
        text += f". Rule {rule.name}: {figures_text(outcome_figures(rule.runs.all()))}"
    return text + "."


def _no_run_text(incident: Any, runs: list[Any]) -> str:
    reason = getattr(incident, "no_run_reason", None)
    if isinstance(reason, dict) and reason.get("text"):
        return f"Why no playbook acted: {reason['text']}."
    if runs:
        return ""
    return "No playbook ran for this incident: no enabled rule matched it."


def _load_incident(incident_id: int) -> Any:
    from playbooks.models import Incident, StepRun

    steps = StepRun.objects.select_related("approval__decided_by").order_by("order")
    return get_object_or_404(
        Incident.objects.select_related("cluster", "parent").prefetch_related(
            "events", Prefetch("runs__steps", queryset=steps), "runs__rule"),
        pk=incident_id,
    )


def _incident_live(request: HttpRequest, found: Any) -> HttpResponse | str:
    return live(request, "console/_incident.html", _incident_context(request, found), element_id="incident-live",
                url=f"/console/incidents/{found.pk}")


@login_required
@require_GET
def incident(request: HttpRequest, incident_id: int) -> HttpResponse:
    found = _load_incident(incident_id)
    if request.htmx:
        return _partial(request, _incident_live(request, found))
    return render(request, "console/incident.html", {"incident": found, "what": incident_what(found),
                                                     "workload": incident_workload(found),
                                                     "incident_live": _incident_live(request, found)})


@login_required
@require_POST
def close(request: HttpRequest, incident_id: int) -> HttpResponse:
    from playbooks.models import Incident

    # The right (that of deciding the incident's approvals) is checked, and a refusal audited,
    # by the service behind router.close_incident.
    incident = get_object_or_404(Incident, pk=incident_id)
    reason = request.POST.get("reason", "").strip()[:500] or f"closed in the console by {request.user.get_username()}"
    with transaction.atomic(durable=True):
        outcome = router.close_incident(incident, _inbound(request, f"/incident close {incident_id}", None), reason)
    return _answer(request, outcome, outcome.startswith("Closed"))


@login_required
@require_POST
def run_playbook(request: HttpRequest, incident_id: int) -> HttpResponse:
    """Start the incident's playbook anyway (cooldown, auto_run off, no match): approvers only,
    audited; its steps still go through the risk gate."""
    from playbooks.services.manual import ActionRefused, start_playbook

    playbook = request.POST.get("playbook", "").strip()[:100]
    refused: ActionRefused | None = None
    with transaction.atomic(durable=True):
        try:
            run = start_playbook(incident_id, request.user, playbook, via="web")
        except ActionRefused as exc:
            refused = exc  # the refusal's audit row commits with this block
    if refused is not None:
        return _answer(request, f"Refused: {refused}", False)
    return _answer(request, f"Started playbook {run.playbook_name} (run #{run.pk}).", True)


@login_required
@require_POST
def start_run(request: HttpRequest, run_id: int) -> HttpResponse:
    from playbooks.engine import start_proposed_run
    from playbooks.models import PlaybookRun

    run = get_object_or_404(PlaybookRun.objects.select_related("incident"), pk=run_id)
    if not _may_act_on(request.user, run.incident):
        return _answer(request, f"Refused: {request.user.get_username()} may not start playbooks for incident "
                       f"#{run.incident_id}.", False)
    started = start_proposed_run(run.pk, by=f"web:{request.user.get_username()}")
    if started:
        return _answer(request, f"Started playbook {run.playbook_name}.", True)
    return _answer(request, f"Playbook {run.playbook_name} is not waiting to be started.", False)


# --- the notification feed ------------------------------------------------------------------------
@login_required
@require_GET
def feed(request: HttpRequest) -> HttpResponse:
    messages = _sent(OutboundMessage.objects.filter(kind=Kind.WEB, address="feed")).order_by("-created_at", "-id")
    page = Paginator(messages, FEED_PAGE_SIZE).get_page(request.GET.get("page"))
    items = [{"at": m.created_at, "html": to_html(_latest_text(m)), "incident_id": m.incident_id} for m in page]
    return render(request, "console/feed.html", {"page": page, "items": items})
