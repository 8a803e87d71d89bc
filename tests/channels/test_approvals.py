"""Approval requests with buttons on every platform, decided by a press: approvers approve (and
the action runs), others are refused where they pressed, a second press is told it is decided."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from agents.approvals import request_approval
from agents.models import Approval
from channels.models import ChannelTarget, Identity, MessageState, OutboundMessage
from tests.channels import platforms
from tests.conftest import wait_for

TG_CHAT, SLACK_CHANNEL, DISCORD_CHANNEL = "-1001234", "C0OPS", "223344556677889900"


@pytest.fixture
def people(approvers):  # type: ignore[no-untyped-def]
    """alice and bob approve, carol does not; each has an account on every platform."""
    for n, user in enumerate((approvers.alice, approvers.bob, approvers.carol), start=1):
        Identity.objects.create(platform="telegram", platform_user_id=str(1000 + n), user=user)
        Identity.objects.create(platform="slack", platform_user_id=f"U0{user.username.upper()}", user=user)
        Identity.objects.create(platform="discord", platform_user_id=str(2000 + n), user=user)
    return approvers


@pytest.fixture
def targets(chat):  # type: ignore[no-untyped-def]
    return [
        ChannelTarget.objects.create(name="tg-ops", kind="telegram", address=TG_CHAT),
        ChannelTarget.objects.create(name="slack-ops", kind="slack", address=SLACK_CHANNEL),
        ChannelTarget.objects.create(name="discord-ops", kind="discord", address=DISCORD_CHANNEL),
    ]


def _delivered(**filters: Any) -> bool:
    rows = OutboundMessage.objects.filter(**filters)
    return rows.exists() and not rows.exclude(state=MessageState.DELIVERED).exists()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_approval_is_decided_by_button_on_any_platform(client, chat, targets, people, fake_mcp, fake_calls,
                                                           celery_worker) -> None:  # type: ignore[no-untyped-def]
    with transaction.atomic():
        approval = request_approval("fake__set_value", {"key": "buttons", "value": "1"}, reason="web-1 is crash looping",
                                    origin="chat", requester="telegram user 1003", origin_ref=f"telegram:{TG_CHAT}")
    wait_for(lambda: _delivered(approval_id=approval.pk), message="the approval on every platform")

    # Each platform's fake got the request, with buttons in that platform's own form.
    [tg] = chat.telegram.chat_messages(TG_CHAT)
    assert approval.code in tg["text"]
    keyboard = tg["reply_markup"]["inline_keyboard"][0]
    assert [b["callback_data"] for b in keyboard] == [f"apv:{approval.pk}:approve", f"apv:{approval.pk}:reject"]
    [sl] = chat.slack.channel_messages(SLACK_CHANNEL)
    actions = next(b for b in sl["blocks"] if b["type"] == "actions")["elements"]
    assert [a["value"] for a in actions] == [f"apv:{approval.pk}:approve", f"apv:{approval.pk}:reject"]
    [dc] = chat.discord.channel_messages(DISCORD_CHANNEL)
    assert [c["custom_id"] for c in dc["components"][0]["components"]] == [f"apv:{approval.pk}:approve",
                                                                           f"apv:{approval.pk}:reject"]

    # carol is not an approver: refused where she pressed, on each platform; nothing changes.
    assert platforms.telegram_press(client, tg, f"apv:{approval.pk}:approve", user_id=1003).status_code == 200
    assert platforms.slack_press(client, SLACK_CHANNEL, sl["ts"], f"apv:{approval.pk}:approve",
                                 user="U0CAROL").status_code == 200
    refused = platforms.discord_press(client, chat, dc, f"apv:{approval.pk}:approve", user="2003").json()
    assert refused["type"] == 4 and refused["data"]["flags"] == 64
    assert "carol may not decide" in refused["data"]["content"]
    wait_for(lambda: chat.telegram.calls("answerCallbackQuery", succeeded=True)
             and len(chat.telegram.chat_messages(TG_CHAT)) == 2 and len(chat.slack.channel_messages(SLACK_CHANNEL)) == 2,
             message="the refusals to be delivered")
    answer = chat.telegram.calls("answerCallbackQuery")[0].body
    assert answer["show_alert"] in ("true", "True", True) and "carol may not decide" in answer["text"]
    tg_refusal = chat.telegram.chat_messages(TG_CHAT)[1]
    assert tg_refusal["reply_to"] == tg["message_id"] and "Refused" in tg_refusal["text"]
    slack_refusal = chat.slack.channel_messages(SLACK_CHANNEL)[1]
    assert slack_refusal["thread_ts"] == sl["ts"] and "carol may not decide" in slack_refusal["text"]
    assert Approval.objects.get(pk=approval.pk).state == "pending"

    # alice approves on Slack: the action runs once, every platform's message shows who decided.
    assert platforms.slack_press(client, SLACK_CHANNEL, sl["ts"], f"apv:{approval.pk}:approve",
                                 user="U0ALICE").status_code == 200
    assert Approval.objects.get(pk=approval.pk).state == "approved"
    wait_for(lambda: fake_calls("buttons") == 1, message="the approved action to run")
    wait_for(lambda: chat.telegram.message(TG_CHAT, tg["message_id"]).get("edited")
             and chat.slack.message(SLACK_CHANNEL, sl["ts"]).get("edited")
             and chat.discord.messages[dc["id"]].get("edited"), message="the approval messages to be edited")
    edited_tg = chat.telegram.message(TG_CHAT, tg["message_id"])
    assert "Approved by alice" in edited_tg["text"] and "reply_markup" not in edited_tg
    edited_slack = chat.slack.message(SLACK_CHANNEL, sl["ts"])
    assert "Approved by alice" in edited_slack["text"]
    assert not [b for b in edited_slack["blocks"] if b["type"] == "actions"]
    edited_discord = chat.discord.messages[dc["id"]]
    assert "Approved by alice" in edited_discord["content"] and edited_discord["components"] == []

    # The outcome of the action is announced where the approval was asked for and shown.
    wait_for(lambda: any("value=1): done" in m["text"] for m in chat.telegram.chat_messages(TG_CHAT)),
             message="the action's outcome in Telegram")

    # bob presses afterwards: told it is already decided, and by whom.
    platforms.telegram_press(client, tg, f"apv:{approval.pk}:reject", user_id=1002)
    wait_for(lambda: len(chat.telegram.calls("answerCallbackQuery", succeeded=True)) == 2, message="bob's answer")
    assert "already approved by alice" in chat.telegram.calls("answerCallbackQuery")[1].body["text"]
    assert fake_calls("buttons") == 1
    assert Approval.objects.get(pk=approval.pk).state == "approved"
