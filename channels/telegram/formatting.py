"""Telegram messages are sent with parse_mode=HTML: only <, > and & need escaping there, and a
pod name full of underscores cannot break the message the way MarkdownV2 would."""

from __future__ import annotations

import html

from channels.formatting import Style, render, split_message

LIMIT = 4096  # characters of message text (https://core.telegram.org/bots/api#sendmessage)


def _escape(text: str) -> str:
    return html.escape(text, quote=False)


def _fence(language: str, body: str) -> str:
    if language:
        return f'<pre><code class="language-{_escape(language)}">{_escape(body)}</code></pre>'
    return f"<pre>{_escape(body)}</pre>"


STYLE = Style(
    escape=_escape,
    bold=lambda text: f"<b>{text}</b>",
    inline_code=lambda text: f"<code>{_escape(text)}</code>",
    fence=_fence,
)


def to_html(text: str) -> str:
    return render(text, STYLE)


def split(text: str) -> list[str]:
    """Rendered parts, each within Telegram's limit."""
    return [to_html(part) for part in split_message(text, LIMIT, lambda s: len(to_html(s)))]
