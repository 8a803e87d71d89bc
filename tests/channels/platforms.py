"""What each platform sends us, built and signed as the platform does, for the tests."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

from tests.plugins.chat import SLACK_SECRET, TELEGRAM_SECRET, ChatFakes

_ids = itertools.count(int(time.time()) % 100000 * 1000)


def telegram_message(client: Any, text: str, *, user_id: int, chat_id: int = -1001234) -> Any:
    update_id = next(_ids)
    update = {"update_id": update_id, "message": {
        "message_id": update_id, "date": int(time.time()), "chat": {"id": chat_id, "type": "group"},
        "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}, "text": text}}
    return client.post("/api/webhooks/telegram", data=update, content_type="application/json",
                       HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=TELEGRAM_SECRET)


def telegram_press(client: Any, message: dict[str, Any], data: str, *, user_id: int) -> Any:
    update_id = next(_ids)
    update = {"update_id": update_id, "callback_query": {
        "id": f"cbq-{update_id}", "chat_instance": "ci-1", "data": data,
        "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
        "message": {"message_id": message["message_id"], "date": message["date"], "chat": message["chat"],
                    "text": message["text"]}}}
    return client.post("/api/webhooks/telegram", data=update, content_type="application/json",
                       HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=TELEGRAM_SECRET)


def slack_signed(body: bytes, secret: str = SLACK_SECRET) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"HTTP_X_SLACK_REQUEST_TIMESTAMP": ts, "HTTP_X_SLACK_SIGNATURE": f"v0={digest}"}


def slack_message(client: Any, text: str, *, user: str, channel: str = "C0OPS") -> Any:
    body = json.dumps({"type": "event_callback", "event_id": f"Ev{next(_ids)}", "event": {
        "type": "message", "user": user, "channel": channel, "text": text, "ts": f"{time.time():.6f}"}}).encode()
    return client.post("/api/webhooks/slack/events", data=body, content_type="application/json", **slack_signed(body))


def slack_press(client: Any, channel: str, message_ts: str, value: str, *, user: str) -> Any:
    payload = {"type": "block_actions", "trigger_id": f"tr-{next(_ids)}", "user": {"id": user, "username": user},
               "channel": {"id": channel}, "message": {"ts": message_ts},
               "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
               "actions": [{"type": "button", "action_id": f"approval_{value.rsplit(':', 1)[1]}", "value": value,
                            "action_ts": f"{time.time():.6f}"}]}
    body = urlencode({"payload": json.dumps(payload)}).encode()
    return client.post("/api/webhooks/slack/interactions", data=body,
                       content_type="application/x-www-form-urlencoded", **slack_signed(body))


def discord_interaction(client: Any, chat: ChatFakes, interaction: dict[str, Any]) -> Any:
    body = json.dumps(interaction).encode()
    signed = chat.discord.sign(body)
    return client.post("/api/webhooks/discord/interactions", data=body, content_type="application/json",
                       HTTP_X_SIGNATURE_ED25519=signed["X-Signature-Ed25519"],
                       HTTP_X_SIGNATURE_TIMESTAMP=signed["X-Signature-Timestamp"])


def discord_press(client: Any, chat: ChatFakes, message: dict[str, Any], custom_id: str, *, user: str) -> Any:
    interaction_id = next(_ids)
    return discord_interaction(client, chat, {
        "id": str(interaction_id), "type": 3, "token": f"tok-{interaction_id}", "channel_id": message["channel_id"],
        "member": {"user": {"id": user, "username": f"user{user}"}}, "message": {"id": message["id"]},
        "data": {"custom_id": custom_id, "component_type": 2}})


def discord_command(client: Any, chat: ChatFakes, text: str, *, user: str, channel: str) -> Any:
    interaction_id = next(_ids)
    return discord_interaction(client, chat, {
        "id": str(interaction_id), "type": 2, "token": f"tok-{interaction_id}", "channel_id": channel,
        "member": {"user": {"id": user, "username": f"user{user}"}},
        "data": {"name": "aiops", "options": [{"name": "command", "type": 3, "value": text}]}})
