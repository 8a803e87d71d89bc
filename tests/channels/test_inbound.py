"""Inbound authentication on every platform, and deduplication of redelivered updates."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import pytest
from nacl.signing import SigningKey
from slack_sdk.signature import Clock

from channels.models import InboundUpdate, OutboundMessage
from channels.slack.views import verify as slack_verify
from tests.plugins.chat import SLACK_SECRET, TELEGRAM_SECRET

pytestmark = pytest.mark.django_db

TELEGRAM_URL = "/api/webhooks/telegram"
SLACK_EVENTS = "/api/webhooks/slack/events"
SLACK_ACTIONS = "/api/webhooks/slack/interactions"
DISCORD_URL = "/api/webhooks/discord/interactions"


def telegram_update(update_id: int, text: str = "/help", user_id: int = 4242) -> dict[str, object]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 10 + update_id,
            "date": int(time.time()),
            "chat": {"id": -1001234, "type": "group", "title": "ops"},
            "from": {"id": user_id, "is_bot": False, "first_name": "Ann"},
            "text": text,
        },
    }


def slack_headers(body: bytes, secret: str = SLACK_SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"HTTP_X_SLACK_REQUEST_TIMESTAMP": ts, "HTTP_X_SLACK_SIGNATURE": f"v0={digest}"}


def discord_headers(chat, body: bytes, key: SigningKey | None = None, timestamp: str | None = None) -> dict[str, str]:  # type: ignore[no-untyped-def]
    signed = chat.discord.sign(body, timestamp=timestamp, key=key)
    return {"HTTP_X_SIGNATURE_ED25519": signed["X-Signature-Ed25519"],
            "HTTP_X_SIGNATURE_TIMESTAMP": signed["X-Signature-Timestamp"]}


# --- disabled ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("setting", "url"), [
    ("TELEGRAM_WEBHOOK_SECRET", TELEGRAM_URL),
    ("SLACK_SIGNING_SECRET", SLACK_EVENTS),
    ("SLACK_SIGNING_SECRET", SLACK_ACTIONS),
    ("DISCORD_PUBLIC_KEY", DISCORD_URL),
])
def test_a_platform_without_its_secret_is_disabled_not_open(client, chat, settings, setting, url) -> None:  # type: ignore[no-untyped-def]
    setattr(settings, setting, "")
    response = client.post(url, data=b"{}", content_type="application/json")
    assert response.status_code == 404


# --- Telegram ----------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [None, "wrong-secret", ""])
def test_telegram_rejects_a_missing_or_wrong_secret_token(client, chat, header) -> None:  # type: ignore[no-untyped-def]
    extra = {} if header is None else {"HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN": header}
    response = client.post(TELEGRAM_URL, data=telegram_update(1), content_type="application/json", **extra)
    assert response.status_code == 401
    assert "X-Telegram-Bot-Api-Secret-Token" in response.json()["error"]
    assert not InboundUpdate.objects.exists()


def test_a_telegram_update_redelivered_with_the_same_update_id_is_processed_once(client, chat) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        response = client.post(TELEGRAM_URL, data=telegram_update(77), content_type="application/json",
                               HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=TELEGRAM_SECRET)
        assert response.status_code == 200  # Telegram must stop retrying
    assert InboundUpdate.objects.filter(platform="telegram", external_id="77").count() == 1
    replies = OutboundMessage.objects.filter(kind="telegram", address="-1001234")
    assert replies.count() == 1
    assert "/incident list" in replies.get().text  # the /help answer, once


def test_telegram_rejects_a_body_that_is_not_an_update(client, chat) -> None:  # type: ignore[no-untyped-def]
    response = client.post(TELEGRAM_URL, data=b"not json", content_type="application/json",
                           HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=TELEGRAM_SECRET)
    assert response.status_code == 400
    assert "not JSON" in response.json()["error"]
    response = client.post(TELEGRAM_URL, data={"message": {}}, content_type="application/json",
                           HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=TELEGRAM_SECRET)
    assert response.status_code == 400


# --- Slack -------------------------------------------------------------------------------------
def test_slack_published_signing_example_verifies_only_within_five_minutes() -> None:
    # https://api.slack.com/authentication/verifying-requests-from-slack (the documented example)
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    body = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
            b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
            b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
            b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    headers = {"X-Slack-Request-Timestamp": "1531420618",
               "X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"}

    class At(Clock):
        def __init__(self, now: float) -> None:
            self._now = now

        def now(self) -> float:
            return self._now

    assert slack_verify(body, headers, secret, At(1531420618 + 10))
    assert slack_verify(body, headers, secret, At(1531420618 + 299))
    assert not slack_verify(body, headers, secret, At(1531420618 + 301))  # replay window passed
    assert not slack_verify(body + b"x", headers, secret, At(1531420618))  # body changed
    assert not slack_verify(body, headers, "another-secret", At(1531420618))


def _slack_event(event_id: str = "Ev001", text: str = "!help") -> bytes:
    return json.dumps({"type": "event_callback", "event_id": event_id, "team_id": "T1",
                       "event": {"type": "message", "user": "U0ANN", "channel": "C0OPS", "text": text,
                                 "ts": "1700000000.000100"}}).encode()


@pytest.mark.parametrize("case", ["unsigned", "wrong_secret", "old", "tampered", "junk_timestamp"])
def test_slack_rejects_unsigned_wrongly_signed_and_old_requests(client, chat, case) -> None:  # type: ignore[no-untyped-def]
    body = _slack_event()
    headers = {
        "unsigned": {},
        "wrong_secret": slack_headers(body, secret="not-the-secret"),
        "old": slack_headers(body, timestamp=int(time.time()) - 301),
        "tampered": slack_headers(body.replace(b"!help", b"!k8s")),
        "junk_timestamp": {**slack_headers(body), "HTTP_X_SLACK_REQUEST_TIMESTAMP": "soon"},
    }[case]
    for url in (SLACK_EVENTS, SLACK_ACTIONS):
        response = client.post(url, data=body, content_type="application/json", **headers)
        assert response.status_code == 401, (case, url)
    assert not InboundUpdate.objects.exists()


def test_slack_url_verification_and_a_retried_event_once(client, chat) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps({"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}).encode()
    response = client.post(SLACK_EVENTS, data=body, content_type="application/json", **slack_headers(body))
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    body = _slack_event("Ev42")
    for retry in range(2):  # Slack retries with X-Slack-Retry-Num when it did not hear back in time
        response = client.post(SLACK_EVENTS, data=body, content_type="application/json",
                               HTTP_X_SLACK_RETRY_NUM=str(retry), **slack_headers(body))
        assert response.status_code == 200
    assert OutboundMessage.objects.filter(kind="slack", address="C0OPS").count() == 1


def test_slack_ignores_its_own_bot_messages(client, chat) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps({"type": "event_callback", "event_id": "Ev9", "event": {
        "type": "message", "bot_id": "BBOT", "channel": "C0OPS", "text": "!help", "ts": "1.2"}}).encode()
    assert client.post(SLACK_EVENTS, data=body, content_type="application/json", **slack_headers(body)).status_code == 200
    assert not OutboundMessage.objects.exists()


def test_slack_interactions_without_a_payload_are_a_bad_request(client, chat) -> None:  # type: ignore[no-untyped-def]
    body = urlencode({"nothing": "here"}).encode()
    response = client.post(SLACK_ACTIONS, data=body, content_type="application/x-www-form-urlencoded",
                           **slack_headers(body))
    assert response.status_code == 400
    assert "payload" in response.json()["error"]


# --- Discord -----------------------------------------------------------------------------------
def test_discord_answers_a_signed_ping_with_pong(client, chat) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps({"id": "1", "type": 1, "application_id": "1", "token": "t", "version": 1}).encode()
    response = client.post(DISCORD_URL, data=body, content_type="application/json", **discord_headers(chat, body))
    assert response.status_code == 200
    assert response.json() == {"type": 1}


@pytest.mark.parametrize("case", ["unsigned", "other_key", "tampered", "old", "garbage_signature"])
def test_discord_rejects_unsigned_and_wrongly_signed_interactions(client, chat, case) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps({"id": "1", "type": 1, "token": "t"}).encode()
    headers = {
        "unsigned": {},
        "other_key": discord_headers(chat, body, key=SigningKey.generate()),
        "tampered": discord_headers(chat, body.replace(b'"type": 1', b'"type": 2')),
        "old": discord_headers(chat, body, timestamp=str(int(time.time()) - 3600)),
        "garbage_signature": {"HTTP_X_SIGNATURE_ED25519": "zz", "HTTP_X_SIGNATURE_TIMESTAMP": str(int(time.time()))},
    }[case]
    response = client.post(DISCORD_URL, data=body, content_type="application/json", **headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid request signature"


def test_discord_slash_command_is_deferred_and_answered_by_a_followup(client, chat) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps({"id": "555", "type": 2, "token": "tok-555", "channel_id": "123456789012345678",
                       "member": {"user": {"id": "8001", "username": "ann"}},
                       "data": {"name": "aiops", "options": [{"name": "command", "type": 3, "value": "help"}]}}).encode()
    for _ in range(2):
        response = client.post(DISCORD_URL, data=body, content_type="application/json", **discord_headers(chat, body))
        assert response.json() == {"type": 5}
    reply = OutboundMessage.objects.get(kind="discord")
    assert reply.address == "interaction:tok-555"
    assert "/incident list" in reply.text


def test_a_slack_mention_that_arrives_as_message_and_app_mention_is_answered_once(client, chat) -> None:  # type: ignore[no-untyped-def]
    for event_id, kind, text in (("EvA", "message", "<@UBOT> !help"), ("EvB", "app_mention", "<@UBOT> !help")):
        body = json.dumps({"type": "event_callback", "event_id": event_id, "event": {
            "type": kind, "user": "U0ANN", "channel": "C0OPS", "text": text, "ts": "1700000000.000200"}}).encode()
        assert client.post(SLACK_EVENTS, data=body, content_type="application/json",
                           **slack_headers(body)).status_code == 200
    [reply] = OutboundMessage.objects.filter(kind="slack")
    assert "/incident list" in reply.text


def test_an_edited_telegram_message_is_not_run_again(client, chat) -> None:  # type: ignore[no-untyped-def]
    update = telegram_update(90)
    update["edited_message"] = update.pop("message")
    response = client.post(TELEGRAM_URL, data=update, content_type="application/json",
                           HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=TELEGRAM_SECRET)
    assert response.status_code == 200
    assert not OutboundMessage.objects.exists()
