"""Console pages for silences and maintenance windows: the list (who made each, when it ends,
what it holds), creating a silence (from the list, or "silence this workload" on an incident's
page), expiring one early; and what the incident page says about them ("silenced by #12 until
14:00 UTC", "in maintenance window ... until ...")."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from channels.web.views import _answer, login_required
from channels.webhooks import without_nul

DURATIONS = [("30m", "30 minutes"), ("1h", "1 hour"), ("2h", "2 hours"), ("4h", "4 hours"), ("8h", "8 hours"),
             ("1d", "1 day"), ("3d", "3 days"), ("7d", "7 days")]


def quiet_context(incident: Any) -> dict[str, Any]:
    """For the incident page: the silence holding it and the maintenance period covering it."""
    from playbooks.maintenance import active_period
    from playbooks.services.quiet import maintenance_line
    from playbooks.services.silences import active_silence_of, silence_line
    from playbooks.silences import matchers_text

    now = timezone.now()
    silence = active_silence_of(incident, now) if incident.is_open else None
    period = active_period(incident.cluster_id, incident.namespace, now) if incident.is_open else None
    return {
        "silence": silence,
        "silence_text": _sentence(silence_line(silence, now)) if silence else "",
        "silence_matchers": matchers_text(silence.matchers) if silence else "",
        "maintenance_text": _sentence("in " + maintenance_line(period)) if period else "",
        "durations": DURATIONS,
    }


def may_act(user: Any) -> bool:
    from playbooks.services.silences import may_silence

    return may_silence(user)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _windows(now: Any) -> list[dict[str, Any]]:
    from playbooks.maintenance import current_period, end_words, next_period, scope_words
    from playbooks.models import MaintenanceWindow

    rows = []
    for window in MaintenanceWindow.objects.select_related("cluster").order_by("name"):
        on = current_period(window, now)
        upcoming = on or next_period(window, now)
        rows.append({
            "window": window, "scope": scope_words(window), "on": on is not None,
            "when": (f"on now, until {end_words(on)}" if on else
                     f"next {upcoming.start:%a %b} {upcoming.start.day} {upcoming.start:%H:%M} {window.time_zone}"
                     if upcoming else "never (the schedule names no future time)"),
            "duration": _minutes(window.duration_minutes),
            "notifications": window.get_notifications_display(),
        })
    return rows


def _minutes(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    return " ".join(p for p in (f"{hours} h" if hours else "", f"{rest} min" if rest else "") if p)


@login_required
@require_http_methods(["GET", "POST"])
def silences(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _create(request)
    return _page(request)


def _page(request: HttpRequest, status: int = 200, form: dict[str, str] | None = None) -> HttpResponse:
    from playbooks.services.silences import silence_rows

    now = timezone.now()
    return render(request, "console/silences.html", {
        "rows": silence_rows(include_ended_hours=24, now=now),
        "windows": _windows(now),
        "may_act": may_act(request.user),
        "durations": DURATIONS,
        "form": form or {},
    }, status=status)


def _create(request: HttpRequest) -> HttpResponse:
    from playbooks.services.silences import SilenceRefused, create_silence
    from playbooks.silences import MatcherError, parse_duration

    form = {name: without_nul(request.POST.get(name, "")).strip()[:2000] for name in ("matchers", "duration", "reason")}
    try:
        duration = parse_duration(form["duration"])
    except MatcherError as exc:
        return _refused(request, str(exc), form)
    refused = None
    with transaction.atomic(durable=True):
        try:
            silence = create_silence(matchers_input=form["matchers"], duration=duration, reason=form["reason"],
                                     user=request.user, via="web")
        except SilenceRefused as exc:
            refused = exc  # a refusal's audit row commits with this block
    if refused is not None:
        return _refused(request, str(refused), form)
    return _answer(request, f"Silence #{silence.pk} created; it ends {silence.ends_at:%Y-%m-%d %H:%M} UTC.", True)


def _refused(request: HttpRequest, reason: str, form: dict[str, str]) -> HttpResponse:
    if request.htmx:
        return _answer(request, f"Refused: {reason}.", False)
    return _page(request, status=400, form={**form, "error": f"Refused: {reason}."})


@login_required
@require_POST
def expire(request: HttpRequest, silence_id: int) -> HttpResponse:
    from playbooks.services.silences import SilenceRefused, expire_silence

    refused = None
    with transaction.atomic(durable=True):
        try:
            expire_silence(silence_id, user=request.user, via="web")
        except SilenceRefused as exc:
            refused = exc
    if refused is not None:
        return _answer(request, f"Refused: {refused}.", False)
    return _answer(request, f"Silence #{silence_id} expired; what it held and is still failing is announced now.",
                   True)


@login_required
@require_POST
def silence_incident(request: HttpRequest, incident_id: int) -> HttpResponse:
    """"Silence this workload for ...": its namespace, name and kind, from now for the duration."""
    from playbooks.models import Incident
    from playbooks.services.silences import SilenceRefused, create_silence
    from playbooks.silences import MatcherError, incident_matchers, parse_duration

    incident = get_object_or_404(Incident, pk=incident_id)
    duration_text = request.POST.get("duration", "").strip()[:20]
    try:
        duration = parse_duration(duration_text)
    except MatcherError as exc:
        return HttpResponseBadRequest(f"duration: {exc}")
    reason = without_nul(request.POST.get("reason", "")).strip()[:1000] or \
        f"silenced from incident #{incident.pk} by {request.user.get_username()}"
    refused = None
    with transaction.atomic(durable=True):
        try:
            silence = create_silence(matchers_input=incident_matchers(incident), duration=duration, reason=reason,
                                     user=request.user, via="web")
        except SilenceRefused as exc:
            refused = exc
    if refused is not None:
        return _answer(request, f"Refused: {refused}.", False)
    return _answer(request, f"Silence #{silence.pk} created: this workload is silenced until "
                            f"{silence.ends_at:%Y-%m-%d %H:%M} UTC.", True)
