"""The neutral markup every message is written in, and the two things each platform needs
from it: rendering with that platform's escaping, and splitting at its length limit.

Neutral markup is deliberately small: `**bold**`, `` `inline code` `` and fenced blocks
(a line starting with ```` ``` ````, optionally with a language, up to a line that is just
```` ``` ````). Everything else is literal text, escaped for the platform, so a pod name or a
log line can never be read as markup (or as an HTML tag, or an @everyone mention).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_INLINE = re.compile(r"\*\*(?P<bold>[^*\n]+?)\*\*|`(?P<code>[^`\n]+)`")


@dataclass(frozen=True)
class Style:
    """How one platform writes each piece of neutral markup."""

    escape: Callable[[str], str]  # literal prose
    bold: Callable[[str], str]  # receives already-escaped text
    inline_code: Callable[[str], str]  # receives raw text
    fence: Callable[[str, str], str]  # (language, raw body)


def render(text: str, style: Style) -> str:
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    prose: list[str] = []

    def flush() -> None:
        if prose:
            out.append(_render_inline("\n".join(prose), style))
            prose.clear()

    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            if end is not None:
                flush()
                out.append(style.fence(line[3:].strip(), "\n".join(lines[i + 1 : end])))
                i = end + 1
                continue
        prose.append(line)
        i += 1
    flush()
    return "\n".join(out)


def _render_inline(text: str, style: Style) -> str:
    pieces: list[str] = []
    position = 0
    for match in _INLINE.finditer(text):
        pieces.append(style.escape(text[position : match.start()]))
        if match["bold"] is not None:
            pieces.append(style.bold(style.escape(match["bold"])))
        else:
            pieces.append(style.inline_code(match["code"]))
        position = match.end()
    pieces.append(style.escape(text[position:]))
    return "".join(pieces)


def split_message(text: str, limit: int, measure: Callable[[str], int] = len) -> list[str]:
    """Split neutral text into parts whose rendered size (`measure`) fits `limit`.

    Splits between lines, never inside a line unless one line alone is too long; a part that
    ends inside a fenced block closes it and the next part reopens it with the same language,
    so every part renders as valid markup on its own.
    """
    if measure(text) <= limit:
        return [text]
    parts: list[str] = []
    current: list[str] = []
    opener: str | None = None  # the ``` line of the fence open at the end of `current`

    def closed(lines: list[str], fence: str | None) -> str:
        return "\n".join(lines) + ("\n```" if fence else "")

    for line in _wrap_long_lines(text.split("\n"), limit, measure):
        fence_after = opener
        if line.startswith("```"):
            fence_after = None if opener is not None and line.strip() == "```" else (line if opener is None else opener)
        if current and measure(closed([*current, line], fence_after)) > limit:
            parts.append(closed(current, opener))
            current = [opener] if opener else []
        current.append(line)
        opener = fence_after
    if current and any(piece.strip() for piece in current if piece != opener):
        parts.append(closed(current, opener))
    return parts


def _wrap_long_lines(lines: list[str], limit: int, measure: Callable[[str], int]) -> list[str]:
    # Room for a fence opener and closer around the line in its part.
    budget = max(limit - 40, 1)
    out: list[str] = []
    for line in lines:
        while measure(line) > budget and len(line) > 1:
            cut = _longest_prefix(line, budget, measure)
            space = line.rfind(" ", int(cut * 0.8), cut)
            cut = space + 1 if space > 0 else cut  # prefer to break between words
            out.append(line[:cut])
            line = line[cut:]
        out.append(line)
    return out


def _longest_prefix(text: str, budget: int, measure: Callable[[str], int]) -> int:
    """The most characters of `text` whose rendering fits `budget` (escaping may grow it)."""
    low, high = 1, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
