"""Escaping per platform and splitting at each platform's limit."""

from __future__ import annotations

import pytest

from channels.discord import formatting as discord
from channels.formatting import split_message
from channels.slack import formatting as slack
from channels.telegram import formatting as telegram

HOSTILE = "pod <b>x</b> & *y* _z_ @everyone `a<b` **bold <i>**"


def test_telegram_html_escapes_literal_text_and_keeps_our_markup() -> None:
    assert telegram.to_html(HOSTILE) == (
        "pod &lt;b&gt;x&lt;/b&gt; &amp; *y* _z_ @everyone <code>a&lt;b</code> <b>bold &lt;i&gt;</b>")


def test_slack_escapes_the_characters_that_start_links_and_mentions() -> None:
    assert slack.to_mrkdwn("<!channel> & <@U1> **hi**") == "&lt;!channel&gt; &amp; &lt;@U1&gt; *hi*"


def test_discord_escapes_markdown_in_literal_text() -> None:
    assert discord.to_markdown("a_b *c* ~d~ |e| **f**\n# not a heading\n> not a quote") == (
        "a\\_b \\*c\\* \\~d\\~ \\|e\\| **f**\n\\# not a heading\n\\> not a quote")
    # A log line containing ``` cannot close our code block early.
    assert discord.to_markdown("```\nline ``` end\n```") == "```\nline `\u200b`` end\n```"


@pytest.mark.parametrize(("module", "limit"), [(telegram, 4096), (slack, 3000), (discord, 2000)])
def test_each_part_fits_its_platform_and_code_blocks_stay_closed(module, limit) -> None:  # type: ignore[no-untyped-def]
    lines = [f"{i:04d} <error> & _detail_ " + "x" * (i % 90) for i in range(600)]
    text = "**Logs**\nbefore the block\n```text\n" + "\n".join(lines) + "\n```\nafter the block"
    parts = module.split(text)
    assert len(parts) > 2
    for part in parts:
        assert len(part) <= limit
    joined = "\n".join(parts)
    for i in range(600):
        assert f"{i:04d} " in joined  # nothing lost
    assert "after the block" in parts[-1]


def test_split_reopens_the_fence_with_its_language() -> None:
    text = "intro\n```python\n" + "\n".join(f"print({i})" for i in range(50)) + "\n```"
    parts = split_message(text, 200)
    assert all(len(p) <= 200 for p in parts)
    for part in parts[1:]:
        assert part.startswith("```python\n")
    for part in parts:
        assert part.count("```") % 2 == 0


def test_a_single_huge_line_is_cut_rather_than_sent_over_the_limit() -> None:
    parts = telegram.split("x" * 10_000)
    assert len(parts) == 3 and all(len(p) <= 4096 for p in parts)
    assert sum(len(p) for p in parts) == 10_000
