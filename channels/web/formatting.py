"""The web console renders neutral markup to HTML; Django's escaping covers literal text.

Line breaks are kept (`<br>`), and fenced blocks (tables, logs, YAML) become `<pre>` blocks that
keep their columns and scroll sideways instead of wrapping (see console.css)."""

from __future__ import annotations

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from channels.formatting import Style, render


def _prose(text: str) -> str:
    return str(escape(text)).replace("\n", "<br>\n")


STYLE = Style(
    escape=_prose,
    bold=lambda text: f"<strong>{text}</strong>",
    inline_code=lambda text: f"<code>{escape(text)}</code>",
    fence=lambda language, body: f'<pre class="block" tabindex="0"><code>{escape(body)}</code></pre>',
)


def to_html(text: str) -> SafeString:
    # Safe: every literal piece went through escape() above.
    return mark_safe(render(text, STYLE))  # noqa: S308
