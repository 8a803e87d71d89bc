"""The one-time platform setup commands, against the fakes, and their refusals."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from tests.plugins.chat import TELEGRAM_SECRET


def test_telegram_set_webhook_registers_the_url_and_secret(chat, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_PUBLIC_URL = "https://aiops.example.com/"
    call_command("telegram_set_webhook")
    [call] = chat.telegram.calls("setWebhook")
    assert call.body["url"] == "https://aiops.example.com/api/webhooks/telegram"
    assert call.body["secret_token"] == TELEGRAM_SECRET
    assert call.body["allowed_updates"] in ('["message", "callback_query"]', ["message", "callback_query"])


@pytest.mark.parametrize(("change", "message"), [
    ({"AIOPS_PUBLIC_URL": "http://aiops.example.com"}, "must be https://"),
    ({"TELEGRAM_WEBHOOK_SECRET": "has spaces and !"}, "TELEGRAM_WEBHOOK_SECRET must be 1-256 characters"),
    ({"TELEGRAM_BOT_TOKEN": ""}, "TELEGRAM_BOT_TOKEN and TELEGRAM_WEBHOOK_SECRET must both be set"),
])
def test_telegram_set_webhook_refuses_what_telegram_would(chat, settings, change, message) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_PUBLIC_URL = "https://aiops.example.com"
    for name, value in change.items():
        setattr(settings, name, value)
    with pytest.raises(CommandError, match=message):
        call_command("telegram_set_webhook")
    assert not chat.telegram.calls("setWebhook")


def test_discord_register_commands_creates_the_aiops_command(chat) -> None:  # type: ignore[no-untyped-def]
    call_command("discord_register_commands")
    [command] = chat.discord.commands
    assert command["name"] == "aiops" and command["options"][0]["name"] == "command"


def test_discord_register_commands_reports_a_refusal(chat, settings) -> None:  # type: ignore[no-untyped-def]
    settings.DISCORD_BOT_TOKEN = "wrong-token"
    with pytest.raises(CommandError, match="Discord refused the command: HTTP 401"):
        call_command("discord_register_commands")
