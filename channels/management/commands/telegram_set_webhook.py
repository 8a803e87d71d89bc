"""`manage.py telegram_set_webhook`: point the bot's webhook at this deployment, with the secret
token Telegram will send back in X-Telegram-Bot-Api-Secret-Token."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from channels.transport import TransportError

_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class Command(BaseCommand):
    help = "Register AIOPS_PUBLIC_URL/api/webhooks/telegram as the Telegram bot's webhook."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", help="Public base URL (default: AIOPS_PUBLIC_URL).")
        parser.add_argument("--allow-http", action="store_true", help="Allow http:// (only for local test servers).")

    def handle(self, *args: Any, **options: Any) -> None:
        from channels.telegram.transport import TelegramTransport

        if not TelegramTransport.is_configured():
            raise CommandError("TELEGRAM_BOT_TOKEN and TELEGRAM_WEBHOOK_SECRET must both be set")
        if not _SECRET.fullmatch(settings.TELEGRAM_WEBHOOK_SECRET):
            raise CommandError("TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and - "
                               "(Telegram refuses other secret tokens)")
        base = (options["url"] or settings.AIOPS_PUBLIC_URL).rstrip("/")
        if not base.startswith("https://") and not (options["allow_http"] and base.startswith("http://")):
            raise CommandError(f"the webhook URL must be https:// (Telegram only calls HTTPS), got {base!r}")
        url = f"{base}/api/webhooks/telegram"
        transport = TelegramTransport()
        try:
            transport._run(lambda bot: bot.set_webhook(
                url=url, secret_token=settings.TELEGRAM_WEBHOOK_SECRET,
                allowed_updates=["message", "callback_query"], drop_pending_updates=False,
            ))
        except TransportError as exc:
            raise CommandError(f"Telegram refused the webhook: {exc}") from None
        self.stdout.write(f"Telegram webhook set to {url}")
