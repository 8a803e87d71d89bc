"""Slack mrkdwn: &, < and > must be escaped (they start links and mentions); bold is *x*."""

from __future__ import annotations

from channels.formatting import Style, render, split_message

# chat.postMessage accepts 40,000 characters but Slack truncates what it shows well before
# that; a section block holds 3,000. Parts of 3,000 read well and fit a block.
LIMIT = 3000


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


STYLE = Style(
    escape=_escape,
    bold=lambda text: f"*{text}*",
    inline_code=lambda text: f"`{_escape(text)}`",
    fence=lambda language, body: f"```\n{_escape(body)}\n```",
)


def to_mrkdwn(text: str) -> str:
    return render(text, STYLE)


def split(text: str) -> list[str]:
    return [to_mrkdwn(part) for part in split_message(text, LIMIT, lambda s: len(to_mrkdwn(s)))]
