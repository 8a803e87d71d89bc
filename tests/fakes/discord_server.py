"""A fake Discord HTTP API (https://discord.com/developers/docs/reference) on loopback, and
the signing half of Discord's interactions: the fake holds an Ed25519 key pair and signs the
interaction bodies tests send to our endpoint exactly as Discord does
(`X-Signature-Ed25519` = hex(sign(timestamp + body)), `X-Signature-Timestamp`).

Routes: `POST/PATCH {base}/channels/{id}/messages[/{message_id}]` (header `Authorization: Bot
<token>`) and the interaction webhooks `POST {base}/webhooks/{app_id}/{token}`,
`PATCH {base}/webhooks/{app_id}/{token}/messages/@original`. Rate limiting is HTTP 429 with a
`Retry-After` header and `{"message": ..., "retry_after": seconds, "global": false}`.
"""

from __future__ import annotations

import json
import re
import time
from itertools import count
from typing import Any

from nacl.signing import SigningKey

from tests.fakes.http_fake import FakeHTTPServer

_CHANNEL = re.compile(r"^/api/v10/channels/(?P<channel>\d+)/messages(?:/(?P<message>\d+))?$")
_COMMANDS = re.compile(r"^/api/v10/applications/(?P<app>\d+)/commands$")
_WEBHOOK = re.compile(r"^/api/v10/webhooks/(?P<app>\d+)/(?P<token>[^/]+)(?:/messages/(?P<message>@original|\d+))?$")


class FakeDiscord(FakeHTTPServer):
    def __init__(self, token: str, application_id: str) -> None:
        self.token = token
        self.application_id = application_id
        self.signing_key = SigningKey.generate()
        self._ids = count(1_100_000_000_000_000_000)
        self.reset_state()
        super().__init__()

    @property
    def base_url(self) -> str:
        return f"{self.origin}/api/v10"  # DISCORD_API_BASE_URL

    @property
    def public_key_hex(self) -> str:
        return self.signing_key.verify_key.encode().hex()  # DISCORD_PUBLIC_KEY

    def reset_state(self) -> None:
        self.messages: dict[str, dict[str, Any]] = {}
        self.followups: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []

    def sign(self, body: bytes, timestamp: str | None = None, key: SigningKey | None = None) -> dict[str, str]:
        """Headers Discord sends with an interaction whose raw body is `body`."""
        timestamp = timestamp or str(int(time.time()))
        signature = (key or self.signing_key).sign(timestamp.encode() + body).signature.hex()
        return {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": timestamp}

    def channel_messages(self, channel_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if m["channel_id"] == str(channel_id)]

    def script_ratelimit(self, api_method: str, retry_after: float, times: int = 1) -> None:
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
        self.script(api_method, 429, body, {"Retry-After": str(retry_after)}, times)

    def route(self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]):  # type: ignore[no-untyped-def]
        if "payload_json" in body:  # multipart form: the JSON rides in one part
            body.update(json.loads(body.pop("payload_json")))
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        match = _CHANNEL.match(path)
        if match:
            api = "create_message" if method == "POST" else "edit_message"
            if auth != f"Bot {self.token}":
                return api, lambda: (401, {"message": "401: Unauthorized", "code": 0})
            if method == "POST":
                return api, lambda: self._create(match["channel"], body)
            return api, lambda: self._edit(match["message"], body)
        match = _COMMANDS.match(path)
        if match:
            if auth != f"Bot {self.token}":
                return "commands", lambda: (401, {"message": "401: Unauthorized", "code": 0})
            return "commands", lambda: self._put_commands(match["app"], body)
        match = _WEBHOOK.match(path)
        if match:
            if match["app"] != self.application_id:
                return "webhook", lambda: (404, {"message": "Unknown Webhook", "code": 10015})
            if method == "POST" and not match["message"]:
                return "followup", lambda: self._followup(match["token"], body)
            return "edit_original", lambda: self._edit_original(match["token"], body)
        return "unknown", lambda: (404, {"message": "404: Not Found", "code": 0})

    def _put_commands(self, app: str, body: Any) -> tuple[int, Any]:
        if app != self.application_id:
            return 403, {"message": "Missing Access", "code": 50001}
        commands = body if isinstance(body, list) else body.get("_raw")
        if not isinstance(commands, list) or not all(isinstance(c, dict) and c.get("name") for c in commands):
            return 400, {"message": "Invalid Form Body", "code": 50035}
        self.commands = [{**c, "id": str(next(self._ids)), "application_id": app} for c in commands]
        return 200, self.commands

    def _message(self, channel_id: str, body: dict[str, Any]) -> dict[str, Any]:
        content = str(body.get("content") or "")
        return {
            "id": str(next(self._ids)),
            "channel_id": channel_id,
            "type": 0,
            "content": content,
            "components": body.get("components") or [],
            "embeds": body.get("embeds") or [],
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "author": {"id": self.application_id, "username": "aiops", "bot": True},
        }

    def _too_long(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        if len(str(body.get("content") or "")) > 2000:
            return 400, {"message": "Invalid Form Body", "code": 50035,
                         "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}}}
        return None

    def _create(self, channel_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if error := self._too_long(body):
            return error
        if not body.get("content") and not body.get("embeds"):
            return 400, {"message": "Cannot send an empty message", "code": 50006}
        message = self._message(channel_id, body)
        self.messages[message["id"]] = message
        return 200, message

    def _edit(self, message_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        message = self.messages.get(message_id)
        if message is None:
            return 404, {"message": "Unknown Message", "code": 10008}
        if error := self._too_long(body):
            return error
        for key in ("content", "components", "embeds"):
            if key in body:
                message[key] = body[key]
        message["edited"] = message.get("edited", 0) + 1
        return 200, message

    def _followup(self, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if error := self._too_long(body):
            return error
        message = self._message("interaction", body)
        message["interaction_token"] = token
        self.followups.append(message)
        self.messages[message["id"]] = message
        return 200, message

    def _edit_original(self, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        message = self._message("interaction", body)
        message["interaction_token"] = token
        message["original"] = True
        self.followups.append(message)
        return 200, message
