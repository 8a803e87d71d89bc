"""Discord markdown: literal text has its markdown characters backslash-escaped; mentions are
disarmed by sending `allowed_mentions: {"parse": []}` (see the transport)."""

from __future__ import annotations

import re

from channels.formatting import Style, render, split_message

LIMIT = 2000  # characters of message content

_SPECIAL = re.compile(r"([\\*_~`|])")
_LINE_START = re.compile(r"(?m)^([>#-])")
_ZERO_WIDTH = "\u200b"


def _escape(text: str) -> str:
    # Inline markers anywhere; quote, heading and list markers only where they start a line.
    return _LINE_START.sub(r"\\\1", _SPECIAL.sub(r"\\\1", text))


def _fence(language: str, body: str) -> str:
    # A ``` inside the body would end the block early; a zero-width space breaks it up.
    safe = body.replace("```", "`" + _ZERO_WIDTH + "``")
    return f"```{language}\n{safe}\n```"


STYLE = Style(
    escape=_escape,
    bold=lambda text: f"**{text}**",
    inline_code=lambda text: f"`{text}`" if "`" not in text else f"`` {text} ``",
    fence=_fence,
)


def to_markdown(text: str) -> str:
    return render(text, STYLE)


def split(text: str) -> list[str]:
    return [to_markdown(part) for part in split_message(text, LIMIT, lambda s: len(to_markdown(s)))]
