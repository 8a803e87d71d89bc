"""A fake Slack Web API (https://api.slack.com/web) on loopback.

`POST {base}/api/<method>` with a Bearer token and a JSON or form body; answers
`{"ok": true, ...}` or `{"ok": false, "error": ...}`; rate limiting is HTTP 429 with a
`Retry-After` header, which is what slack_sdk's WebClient reports in `SlackApiError`.
"""

from __future__ import annotations

import time
from typing import Any

from tests.fakes.http_fake import FakeHTTPServer


class FakeSlack(FakeHTTPServer):
    def __init__(self, token: str) -> None:
        self.token = token
        self.reset_state()
        super().__init__()

    @property
    def base_url(self) -> str:
        return f"{self.origin}/api/"  # SLACK_API_BASE_URL

    def reset_state(self) -> None:
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self._counter = 0

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        return self.messages[(channel, ts)]

    def channel_messages(self, channel: str) -> list[dict[str, Any]]:
        return [m for (ch, _), m in sorted(self.messages.items(), key=lambda kv: kv[0][1]) if ch == channel]

    def script_ratelimit(self, api_method: str, retry_after: int, times: int = 1) -> None:
        self.script(api_method, 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}, times)

    def route(self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]):  # type: ignore[no-untyped-def]
        if not path.startswith("/api/"):
            return "unknown", lambda: (404, {"ok": False, "error": "unknown_method"})
        api = path[len("/api/"):]
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if auth != f"Bearer {self.token}" and body.get("token") != self.token:
            return api, lambda: (200, {"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "_api_" + api.replace(".", "_"), None)
        if handler is None:
            return api, lambda: (200, {"ok": False, "error": "unknown_method"})
        return api, lambda: handler(body)

    def _api_auth_test(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"ok": True, "user_id": "UBOT", "bot_id": "BBOT", "team_id": "T0001"}

    def _api_chat_postMessage(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        channel = str(body.get("channel") or "")
        if not channel:
            return 200, {"ok": False, "error": "channel_not_found"}
        if not body.get("text") and not body.get("blocks"):
            return 200, {"ok": False, "error": "no_text"}
        if len(str(body.get("text") or "")) > 40000:
            return 200, {"ok": False, "error": "msg_too_long"}
        self._counter += 1
        ts = f"{int(time.time())}.{self._counter:06d}"
        message = {"type": "message", "ts": ts, "text": body.get("text", ""), "blocks": body.get("blocks") or [],
                   "thread_ts": body.get("thread_ts"), "bot_id": "BBOT"}
        self.messages[(channel, ts)] = message
        return 200, {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _api_chat_update(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        key = (str(body.get("channel")), str(body.get("ts")))
        message = self.messages.get(key)
        if message is None:
            return 200, {"ok": False, "error": "message_not_found"}
        message["text"] = body.get("text", "")
        message["blocks"] = body.get("blocks") or []
        message["edited"] = message.get("edited", 0) + 1
        return 200, {"ok": True, "channel": key[0], "ts": key[1], "text": message["text"]}

    def _api_chat_postEphemeral(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not body.get("user"):
            return 200, {"ok": False, "error": "user_not_in_channel"}
        return 200, {"ok": True, "message_ts": f"{int(time.time())}.999999"}
