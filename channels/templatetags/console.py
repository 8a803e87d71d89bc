"""Template tags of the web console: the people renderer's words, and badges that carry an
icon and a word besides their colour."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from channels import formatting

register = template.Library()

SEVERITY = {"critical": "🔴", "warning": "🟠", "info": "🔵"}
STATE = {"open": "⚠", "resolved": "✔"}


@register.simple_tag
def action_words(tool: str, arguments: Any) -> str:
    return formatting.action_words(tool, arguments if isinstance(arguments, dict) else {})


@register.filter
def value_text(value: Any) -> str:
    return formatting.value_text(value)


@register.filter
def when(moment: Any) -> str:
    """The time of day for today's moments, the date too for older ones (UTC, as stored)."""
    from django.utils import timezone

    if moment is None:
        return ""
    if timezone.now() - moment < timedelta(hours=20):
        return f"{moment:%H:%M:%S}"
    return f"{moment:%b %d, %H:%M}"


@register.simple_tag
def severity_badge(severity: str) -> SafeString:
    return format_html('<span class="badge sev-{}"><span aria-hidden="true">{}</span> {}</span>',
                       severity, SEVERITY.get(severity, "•"), severity)


@register.simple_tag
def state_badge(state: str) -> SafeString:
    return format_html('<span class="badge state-{}"><span aria-hidden="true">{}</span> {}</span>',
                       state, STATE.get(state, "•"), state)
