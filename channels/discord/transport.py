"""Discord HTTP API over httpx: bot messages in channels, webhooks, and interaction follow-ups."""

from __future__ import annotations

from typing import Any

import httpx
from django.conf import settings

from channels.discord import formatting
from channels.transport import Button, Sent, Transport, TransportError, is_enabled

INTERACTION_PREFIX = "interaction:"
# Never ping anyone from a notification, whatever a pod name or log line contains.
NO_MENTIONS: dict[str, Any] = {"parse": []}


def components(buttons: list[Button]) -> list[dict[str, Any]]:
    if not buttons:
        return []
    return [{
        "type": 1,  # action row
        "components": [
            # style 3 = success (green), 4 = danger (red)
            {"type": 2, "style": 3 if b.action == "approve" else 4, "label": b.label, "custom_id": b.callback_data}
            for b in buttons
        ],
    }]


class DiscordTransport(Transport):
    kind = "discord"
    limit = formatting.LIMIT

    @classmethod
    def is_configured(cls) -> bool:
        return is_enabled(cls.kind)

    def render(self, text: str) -> str:
        return formatting.to_markdown(text)

    def split(self, text: str) -> list[str]:
        return formatting.split(text)

    def _urls(self, address: str) -> tuple[str, str, bool]:
        """(create URL, edit URL prefix, needs the bot token) for an address."""
        base = settings.DISCORD_API_BASE_URL.rstrip("/")
        if address.startswith(INTERACTION_PREFIX):
            token = address[len(INTERACTION_PREFIX):]
            hook = f"{base}/webhooks/{settings.DISCORD_APPLICATION_ID}/{token}"
            return hook, f"{hook}/messages", False
        if address.startswith("https://"):
            return f"{address}?wait=true", f"{address}/messages", False
        return f"{base}/channels/{address}/messages", f"{base}/channels/{address}/messages", True

    def _request(self, method: str, url: str, body: dict[str, Any], *, bot: bool) -> dict[str, Any]:
        headers = {"User-Agent": "DiscordBot (https://github.com/aiops-agent, 1.0)"}
        if bot:
            headers["Authorization"] = f"Bot {settings.DISCORD_BOT_TOKEN}"
        try:
            response = httpx.request(method, url, json=body, headers=headers, timeout=settings.AIOPS_CHAT_HTTP_TIMEOUT)
        except httpx.HTTPError as exc:
            raise TransportError(f"discord unreachable: {exc}") from exc
        if response.status_code == 429:
            try:
                retry_after = float(response.json().get("retry_after"))
            except (ValueError, TypeError, AttributeError):
                retry_after = float(response.headers.get("Retry-After") or 1)
            raise TransportError("discord rate limited", retry_after=retry_after)
        if response.status_code >= 500:
            raise TransportError(f"discord unavailable: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise TransportError(f"discord refused: HTTP {response.status_code} {response.text[:300]}", permanent=True)
        return response.json() if response.content else {}

    def send(self, address: str, parts: list[str], *, buttons: list[Button], reply_to: str, start: int,
             on_part: Any) -> Sent:
        create, _, bot = self._urls(address)
        first = ""
        for index in range(start, len(parts)):
            last = index == len(parts) - 1
            body: dict[str, Any] = {"content": parts[index], "allowed_mentions": NO_MENTIONS}
            if last and buttons:
                body["components"] = components(buttons)
            if reply_to and bot:
                body["message_reference"] = {"message_id": reply_to, "fail_if_not_exists": False}
            data = self._request("POST", create, body, bot=bot)
            on_part(index, str(data.get("id", "")))
            first = first or str(data.get("id", ""))
        return Sent(message_id=first)

    def edit(self, address: str, message_id: str, text: str, *, buttons: list[Button]) -> None:
        _, prefix, bot = self._urls(address)
        body = {"content": formatting.split(text)[0], "components": components(buttons), "allowed_mentions": NO_MENTIONS}
        self._request("PATCH", f"{prefix}/{message_id}", body, bot=bot)
