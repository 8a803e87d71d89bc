"""Slack Web API through slack_sdk's WebClient (retries are ours, so its own handlers are off)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from channels.slack import formatting
from channels.transport import Button, Sent, Transport, TransportError, is_enabled

# Errors that another attempt cannot fix.
_PERMANENT = {
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "no_permission",
    "channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text", "invalid_blocks",
    "message_not_found", "cant_update_message", "edit_window_closed", "missing_scope", "invalid_arguments",
}


def blocks(text: str, buttons: list[Button]) -> list[dict[str, Any]]:
    """A section with the text and, for an approval, an actions block (Block Kit)."""
    out: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if buttons:
        out.append({
            "type": "actions",
            "block_id": f"approval-{buttons[0].approval_id}",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": b.label, "emoji": True},
                    "action_id": f"approval_{b.action}",
                    "value": b.callback_data,
                    "style": "primary" if b.action == "approve" else "danger",
                }
                for b in buttons
            ],
        })
    return out


class SlackTransport(Transport):
    kind = "slack"
    limit = formatting.LIMIT

    @classmethod
    def is_configured(cls) -> bool:
        return is_enabled(cls.kind)

    def render(self, text: str) -> str:
        return formatting.to_mrkdwn(text)

    def split(self, text: str) -> list[str]:
        return formatting.split(text)

    def _client(self) -> WebClient:
        return WebClient(
            token=settings.SLACK_BOT_TOKEN,
            base_url=settings.SLACK_API_BASE_URL,
            timeout=int(settings.AIOPS_CHAT_HTTP_TIMEOUT),
            retry_handlers=[],
        )

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return dict(self._client().api_call(method, json=kwargs).data)  # type: ignore[arg-type]
        except SlackApiError as exc:
            response = exc.response
            status = response.status_code
            error = response.get("error") if isinstance(response.data, dict) else None
            if status == 429:
                retry_after = float(response.headers.get("Retry-After") or response.headers.get("retry-after") or 1)
                raise TransportError(f"slack rate limited ({method})", retry_after=retry_after) from exc
            if status >= 500:
                raise TransportError(f"slack unavailable: HTTP {status} ({method})") from exc
            raise TransportError(f"slack {method}: {error or status}", permanent=error in _PERMANENT) from exc
        except (SlackClientError, OSError) as exc:
            raise TransportError(f"slack unreachable: {exc}") from exc

    def send(self, address: str, parts: list[str], *, buttons: list[Button], reply_to: str, start: int,
             on_part: Any) -> Sent:
        first = ""
        for index in range(start, len(parts)):
            last = index == len(parts) - 1
            kwargs: dict[str, Any] = {"channel": address, "text": parts[index], "unfurl_links": False}
            if last and buttons:
                kwargs["blocks"] = blocks(parts[index], buttons)
            if reply_to:
                kwargs["thread_ts"] = reply_to
            data = self._call("chat.postMessage", **kwargs)
            on_part(index, str(data["ts"]))
            first = first or str(data["ts"])
        return Sent(message_id=first)

    def edit(self, address: str, message_id: str, text: str, *, buttons: list[Button]) -> None:
        rendered = formatting.split(text)[0]
        self._call("chat.update", channel=address, ts=message_id, text=rendered, blocks=blocks(rendered, buttons))

    def post_ephemeral(self, channel: str, user: str, text: str, thread_ts: str = "") -> None:
        kwargs: dict[str, Any] = {"channel": channel, "user": user, "text": formatting.split(text)[0]}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        self._call("chat.postEphemeral", **kwargs)
