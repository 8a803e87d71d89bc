"""Outbound transports: one per kind, found through a registry of dotted paths imported
lazily (a deployment without Slack never imports slack_sdk), all raising `TransportError`,
which alone decides whether a failed delivery is retried."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

REGISTRY: dict[str, str] = {
    "telegram": "channels.telegram.transport.TelegramTransport",
    "slack": "channels.slack.transport.SlackTransport",
    "discord": "channels.discord.transport.DiscordTransport",
    "web": "channels.web.transport.WebTransport",
}
# The settings each kind needs to be enabled, read without importing its transport (and its
# platform's client library): every event's routing asks, in processes that never deliver (the
# watcher), while only a delivery needs the library. Each transport's `is_configured` is this.
SECRETS: dict[str, tuple[str, ...]] = {
    "telegram": ("TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET"),
    "slack": ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"),
    "discord": ("DISCORD_APPLICATION_ID", "DISCORD_PUBLIC_KEY", "DISCORD_BOT_TOKEN"),
    "web": (),  # behind Django login; nothing to configure
}


class TransportError(Exception):
    """A delivery failed. `permanent` errors (bad token, unknown chat, malformed message) are
    not retried; others are, after `retry_after` seconds when the platform said how long."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True)
class Button:
    """An approval button: `action` is "approve" or "reject"."""

    label: str
    action: str
    approval_id: int

    @property
    def callback_data(self) -> str:
        # Telegram allows 64 bytes of callback data; Discord 100 for a custom_id.
        return f"apv:{self.approval_id}:{self.action}"


def parse_callback_data(data: str) -> tuple[int, str] | None:
    """`apv:<approval id>:<approve|reject>` -> (id, decision); None for anything else."""
    parts = data.split(":")
    if len(parts) != 3 or parts[0] != "apv" or not parts[1].isdigit() or parts[2] not in ("approve", "reject"):
        return None
    return int(parts[1]), parts[2]


def approval_buttons(approval_id: int) -> list[Button]:
    return [Button("✅ Approve", "approve", approval_id), Button("❌ Reject", "reject", approval_id)]


@dataclass
class Sent:
    """What a platform told us about a delivered message: its id (for later edits)."""

    message_id: str
    extra: dict[str, Any] = field(default_factory=dict)


class Transport(ABC):
    kind: str = ""
    limit: int = 4000  # characters per message part, after rendering

    @classmethod
    @abstractmethod
    def is_configured(cls) -> bool: ...

    @abstractmethod
    def render(self, text: str) -> str: ...

    @abstractmethod
    def split(self, text: str) -> list[str]:
        """Rendered parts, each within the platform's limit, code blocks intact."""

    @abstractmethod
    def send(self, address: str, parts: list[str], *, buttons: list[Button], reply_to: str, start: int,
             on_part: Any) -> Sent:
        """Send rendered `parts[start:]` in order (buttons on the last), calling `on_part(index, id)`
        after each so a retry resumes after the parts already delivered."""

    @abstractmethod
    def edit(self, address: str, message_id: str, text: str, *, buttons: list[Button]) -> None: ...

    def answer_callback(self, callback_id: str, text: str, *, alert: bool) -> None:
        raise TransportError(f"{self.kind} has no callback answers", permanent=True)


def transport_class(kind: str) -> type[Transport]:
    try:
        dotted = REGISTRY[kind]
    except KeyError:
        raise TransportError(f"unknown channel kind {kind!r}", permanent=True) from None
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def get_transport(kind: str) -> Transport:
    cls = transport_class(kind)
    if not cls.is_configured():
        raise TransportError(f"{kind} is not configured (its secrets are unset)", permanent=True)
    return cls()


def is_enabled(kind: str) -> bool:
    """The kind is known and its secrets are set (its transport is not imported)."""
    from django.conf import settings

    names = SECRETS.get(kind)
    return names is not None and all(getattr(settings, name, "") for name in names)
