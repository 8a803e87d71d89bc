"""Every message the suite writes is checked for what must never reach a person (loaded by
tests/conftest.py): a Python repr (`{'`, `['`), `None`, an empty path segment (`Node//`), an unrendered template (`{{`).

A receiver on the outbox sees each row any test writes -- notifications, approval requests and
their edits, command replies, assistant answers -- and the test that wrote a bad one fails in
its teardown with the text. Pages are scanned by tests/channels/test_people_texts.py and the
browser walk (tests/channels/browser.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

MARKERS = re.compile(r"\{'|\['|\bNone\b|Node//|\{\{")


def unreadable(text: str) -> list[str]:
    """The markers found in `text`, each with a little context."""
    return [text[max(m.start() - 40, 0) : m.end() + 40] for m in MARKERS.finditer(text)]


_seen: list[tuple[str, str]] = []


def _on_message(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    found = unreadable(instance.text or "")
    if found:
        _seen.append((f"{instance.kind}:{instance.operation}", instance.text))


@pytest.fixture(scope="session", autouse=True)
def _watch_outbox() -> Iterator[None]:
    from django.db.models.signals import post_save

    # A lazy sender: no database or model import needed for tests that never touch either.
    post_save.connect(_on_message, sender="channels.OutboundMessage", dispatch_uid="tests.texts.outbox")
    yield
    post_save.disconnect(sender="channels.OutboundMessage", dispatch_uid="tests.texts.outbox")


@pytest.fixture(autouse=True)
def _no_repr_in_messages() -> Iterator[None]:
    start = len(_seen)
    yield
    bad = _seen[start:]
    if bad:
        shown = "\n---\n".join(f"[{where}] {text[:1500]}" for where, text in bad[:5])
        pytest.fail(f"{len(bad)} message(s) written for people hold a Python repr, None or Node//:\n{shown}",
                    pytrace=False)
