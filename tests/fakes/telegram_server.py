"""A fake Telegram Bot API (https://core.telegram.org/bots/api) on loopback.

Requests are `{base}/bot<token>/<method>` with form-encoded or JSON bodies; answers are
`{"ok": true, "result": ...}` or `{"ok": false, "error_code": N, "description": ...,
"parameters": {"retry_after": N}}`, which is what python-telegram-bot parses.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from tests.fakes.http_fake import FakeHTTPServer

_PATH = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>\w+)$")


class FakeTelegram(FakeHTTPServer):
    def __init__(self, token: str) -> None:
        self.token = token
        self.bot_user = {"id": 777000111, "is_bot": True, "first_name": "AIOps", "username": "aiops_test_bot"}
        self.reset_state()
        super().__init__()

    @property
    def base_url(self) -> str:
        return self.origin  # TELEGRAM_API_BASE_URL; the transport appends /bot

    def reset_state(self) -> None:
        self.messages: dict[tuple[str, int], dict[str, Any]] = {}
        self._next_id = 100

    def message(self, chat_id: str | int, message_id: int) -> dict[str, Any]:
        return self.messages[(str(chat_id), int(message_id))]

    def chat_messages(self, chat_id: str | int) -> list[dict[str, Any]]:
        return [m for (chat, _), m in sorted(self.messages.items(), key=lambda kv: kv[0][1]) if chat == str(chat_id)]

    @staticmethod
    def error(code: int, description: str, retry_after: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        return body

    def script_flood(self, api_method: str, retry_after: int, times: int = 1) -> None:
        self.script(api_method, 429, self.error(429, f"Too Many Requests: retry after {retry_after}", retry_after),
                    times=times)

    def route(self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]):  # type: ignore[no-untyped-def]
        match = _PATH.match(path)
        if not match:
            return "unknown", lambda: (404, self.error(404, "Not Found"))
        api = match["method"]
        if match["token"] != self.token:
            return api, lambda: (401, self.error(401, "Unauthorized"))
        for key in ("reply_markup", "entities", "reply_parameters", "link_preview_options"):
            if isinstance(body.get(key), str):
                body[key] = json.loads(body[key])
        handler = getattr(self, f"_api_{api}", None)
        if handler is None:
            return api, lambda: (404, self.error(404, "Not Found: method not found"))
        return api, lambda: handler(body)

    def _ok(self, result: Any) -> tuple[int, dict[str, Any]]:
        return 200, {"ok": True, "result": result}

    def _api_getMe(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:  # noqa: N802
        return self._ok(self.bot_user)

    def _api_setWebhook(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:  # noqa: N802
        return self._ok(True)

    def _api_sendMessage(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:  # noqa: N802
        text = str(body.get("text") or "")
        if not text:
            return 400, self.error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return 400, self.error(400, "Bad Request: message is too long")
        self._next_id += 1
        chat_id = str(body["chat_id"])
        message = {
            "message_id": self._next_id,
            "date": int(time.time()),
            "chat": {"id": int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id, "type": "group"},
            "from": self.bot_user,
            "text": text,
            "parse_mode": body.get("parse_mode"),
        }
        if body.get("reply_markup"):
            message["reply_markup"] = body["reply_markup"]
        reply_to = (body.get("reply_parameters") or {}).get("message_id") or body.get("reply_to_message_id")
        if reply_to:
            message["reply_to"] = int(reply_to)
        self.messages[(chat_id, self._next_id)] = message
        return self._ok({k: v for k, v in message.items() if k not in ("parse_mode", "reply_to")})

    def _api_editMessageText(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:  # noqa: N802
        key = (str(body.get("chat_id")), int(body.get("message_id") or 0))
        message = self.messages.get(key)
        if message is None:
            return 400, self.error(400, "Bad Request: message to edit not found")
        message["text"] = body.get("text") or ""
        message["parse_mode"] = body.get("parse_mode")
        if body.get("reply_markup"):
            message["reply_markup"] = body["reply_markup"]
        else:
            message.pop("reply_markup", None)  # Telegram drops the keyboard when an edit carries none
        message["edited"] = message.get("edited", 0) + 1
        return self._ok({k: v for k, v in message.items() if k not in ("parse_mode", "reply_to", "edited")})

    def _api_answerCallbackQuery(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:  # noqa: N802
        if not body.get("callback_query_id"):
            return 400, self.error(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        return self._ok(True)
