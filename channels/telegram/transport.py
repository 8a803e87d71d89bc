"""Telegram Bot API through python-telegram-bot (async; each call runs its own event loop, as a
Celery prefork child has none)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from django.conf import settings
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.request import HTTPXRequest

from channels.telegram import formatting
from channels.transport import Button, Sent, Transport, TransportError, is_enabled

T = TypeVar("T")


def _keyboard(buttons: list[Button]) -> InlineKeyboardMarkup | None:
    if not buttons:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(b.label, callback_data=b.callback_data) for b in buttons]])


def _chat(address: str) -> int | str:
    return int(address) if address.lstrip("-").isdigit() else address


def _seconds(value: int | dt.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


class TelegramTransport(Transport):
    kind = "telegram"
    limit = formatting.LIMIT

    @classmethod
    def is_configured(cls) -> bool:
        return is_enabled(cls.kind)

    def render(self, text: str) -> str:
        return formatting.to_html(text)

    def split(self, text: str) -> list[str]:
        return formatting.split(text)

    def _run(self, call: Callable[[Bot], Awaitable[T]]) -> T:
        try:
            return _session().run(call)
        except RetryAfter as exc:
            raise TransportError(f"telegram flood control: {exc}", retry_after=_seconds(exc.retry_after)) from exc
        except (Forbidden, InvalidToken, ChatMigrated) as exc:
            raise TransportError(f"telegram refused: {exc}", permanent=True) from exc
        except BadRequest as exc:
            if "message is not modified" in str(exc).lower():
                raise _NotModified() from exc
            raise TransportError(f"telegram bad request: {exc}", permanent=True) from exc
        except NetworkError as exc:  # TimedOut is one; 5xx answers come as NetworkError too
            raise TransportError(f"telegram unavailable: {exc}") from exc
        except TelegramError as exc:
            raise TransportError(f"telegram error: {exc}") from exc

    def send(self, address: str, parts: list[str], *, buttons: list[Button], reply_to: str, start: int,
             on_part: Any) -> Sent:
        first_id = ""
        for index in range(start, len(parts)):
            last = index == len(parts) - 1
            reply = ReplyParameters(message_id=int(reply_to), allow_sending_without_reply=True) if reply_to else None
            message = self._run(
                lambda bot, text=parts[index], last=last, reply=reply: bot.send_message(
                    chat_id=_chat(address),
                    text=text,
                    parse_mode=ParseMode.HTML,
                    reply_markup=_keyboard(buttons) if last else None,
                    reply_parameters=reply,
                    disable_web_page_preview=True,
                )
            )
            on_part(index, str(message.message_id))
            first_id = first_id or str(message.message_id)
        return Sent(message_id=first_id)

    def edit(self, address: str, message_id: str, text: str, *, buttons: list[Button]) -> None:
        try:
            self._run(
                lambda bot: bot.edit_message_text(
                    chat_id=_chat(address),
                    message_id=int(message_id),
                    text=formatting.split(text)[0],
                    parse_mode=ParseMode.HTML,
                    reply_markup=_keyboard(buttons),
                    disable_web_page_preview=True,
                )
            )
        except _NotModified:
            return  # a redelivered edit: the message already says this

    def answer_callback(self, callback_id: str, text: str, *, alert: bool) -> None:
        # Callback answers are plain text (no parse mode): drop the neutral markup's markers.
        plain = text.replace("**", "").replace("`", "")[:200]
        self._run(lambda bot: bot.answer_callback_query(callback_id, text=plain, show_alert=alert))


class _NotModified(Exception):
    pass


class _Session:
    """One event loop and one Bot (with its HTTP connection pool) per thread and configuration.

    python-telegram-bot is async and a Celery prefork child has no loop; building a Bot, an
    HTTP client and a loop for every message cost ~90 ms a message (bench/chat_delivery.py),
    mostly connection set-up. Keeping them alive reuses the connection to the Bot API.
    """

    def __init__(self, key: tuple[str, str, float]) -> None:
        token, base_url, timeout = key
        self.key = key
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.request = HTTPXRequest(connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout)
        self.bot = Bot(token, base_url=f"{base_url.rstrip('/')}/bot", request=self.request)

    def run(self, call: Callable[[Bot], Awaitable[T]]) -> T:
        return self.loop.run_until_complete(call(self.bot))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.request.shutdown())
        finally:
            self.loop.close()


_local = threading.local()  # a loop belongs to one thread: one session per thread (and process)


def _session() -> _Session:
    key = (settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_API_BASE_URL, float(settings.AIOPS_CHAT_HTTP_TIMEOUT))
    current: _Session | None = getattr(_local, "session", None)
    if current is not None and current.pid == os.getpid() and current.key == key and not current.loop.is_closed():
        return current
    if current is not None and current.pid == os.getpid():
        current.close()  # the settings changed (a test, a reload): start afresh
    # After a fork the parent's loop and sockets are not ours to use or close: just drop them.
    _local.session = _Session(key)
    return _local.session
