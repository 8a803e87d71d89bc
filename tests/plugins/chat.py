"""Shared test fixtures: chat (loaded by tests/conftest.py).

The fake Telegram, Slack and Discord servers start when this plugin is imported, before any
Celery worker: their URLs and the platform secrets go into os.environ, so the session's
worker (which copies the environment when it starts) delivers to the same fakes as the test
process. `chat` (function scope) forgets what the fakes recorded and points the test
process's settings at them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.slack_server import FakeSlack
from tests.fakes.telegram_server import FakeTelegram

TELEGRAM_TOKEN = "123456:TEST-telegram-token"
TELEGRAM_SECRET = "telegram-webhook-secret-for-tests"
SLACK_TOKEN = "xoxb-test-slack-token"
SLACK_SECRET = "slack-signing-secret-for-tests"
DISCORD_TOKEN = "discord-bot-token-for-tests"
DISCORD_APP_ID = "990000000000000001"


@dataclass
class ChatFakes:
    telegram: FakeTelegram
    slack: FakeSlack
    discord: FakeDiscord

    def settings(self) -> dict[str, str]:
        return {
            "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
            "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
            "TELEGRAM_API_BASE_URL": self.telegram.base_url,
            "SLACK_BOT_TOKEN": SLACK_TOKEN,
            "SLACK_SIGNING_SECRET": SLACK_SECRET,
            "SLACK_API_BASE_URL": self.slack.base_url,
            "DISCORD_APPLICATION_ID": DISCORD_APP_ID,
            "DISCORD_PUBLIC_KEY": self.discord.public_key_hex,
            "DISCORD_BOT_TOKEN": DISCORD_TOKEN,
            "DISCORD_API_BASE_URL": self.discord.base_url,
            # Back-off short enough for tests; the 429 test asserts the platform's own wait.
            "AIOPS_CHAT_RETRY_BASE": "0.2",
        }

    def reset(self) -> None:
        for fake in (self.telegram, self.slack, self.discord):
            fake.reset()


_FAKES = ChatFakes(FakeTelegram(TELEGRAM_TOKEN), FakeSlack(SLACK_TOKEN), FakeDiscord(DISCORD_TOKEN, DISCORD_APP_ID))
os.environ.update(_FAKES.settings())


@pytest.fixture(scope="session")
def chat_fakes() -> ChatFakes:
    return _FAKES


@pytest.fixture
def chat(chat_fakes: ChatFakes, settings) -> Iterator[ChatFakes]:  # type: ignore[no-untyped-def]
    """The fakes, emptied, with this process's settings pointing at them."""
    chat_fakes.reset()
    for name, value in chat_fakes.settings().items():
        setattr(settings, name, float(value) if name == "AIOPS_CHAT_RETRY_BASE" else value)
    yield chat_fakes
    chat_fakes.reset()
