"""The web console renders neutral markup to HTML; Django's escaping covers literal text."""

from __future__ import annotations

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from channels.formatting import Style, render

STYLE = Style(
    escape=lambda text: str(escape(text)),
    bold=lambda text: f"<strong>{text}</strong>",
    inline_code=lambda text: f"<code>{escape(text)}</code>",
    fence=lambda language, body: f"<pre><code>{escape(body)}</code></pre>",
)


def to_html(text: str) -> SafeString:
    # Safe: every literal piece went through escape() above.
    return mark_safe(render(text, STYLE))  # noqa: S308
