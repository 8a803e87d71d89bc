"""The web console's "delivery": the outbox row itself is what the console shows, so
delivering it only marks it delivered (no network, never retried). An edit is delivered the
same way: the console shows a message as its latest edit says (an approval's copy loses its
buttons and says who decided, like every other platform's)."""

from __future__ import annotations

from typing import Any

from channels.transport import Button, Sent, Transport, is_enabled


class WebTransport(Transport):
    kind = "web"
    limit = 100_000

    @classmethod
    def is_configured(cls) -> bool:
        return is_enabled(cls.kind)  # always: behind Django login, nothing to configure

    def render(self, text: str) -> str:
        return text

    def split(self, text: str) -> list[str]:
        return [text]

    def send(self, address: str, parts: list[str], *, buttons: list[Button], reply_to: str, start: int,
             on_part: Any) -> Sent:
        # An id, so that edits of this message (an approval decided) are delivered like any other's.
        message_id = f"web:{address}"
        for index in range(start, len(parts)):
            on_part(index, message_id)
        return Sent(message_id=message_id)

    def edit(self, address: str, message_id: str, text: str, *, buttons: list[Button]) -> None:
        return None
