"""Slack: the Events API (`/api/webhooks/slack/events`) and interactivity
(`/api/webhooks/slack/interactions`), both signed with the app's signing secret and checked by
slack_sdk's SignatureVerifier (HMAC-SHA256 over `v0:<timestamp>:<body>`, refused when the
timestamp is more than 5 minutes from now, so a captured request cannot be replayed)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs

import structlog
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from slack_sdk.signature import Clock, SignatureVerifier

from channels import router
from channels.inbound import Inbound, identify, record_update
from channels.models import Kind
from channels.transport import parse_callback_data
from channels.webhooks import array, bad_request, duplicate, json_body, obj, unauthorized, webhook, without_nul

log = structlog.get_logger(__name__)

_MENTION = re.compile(r"^\s*<@[A-Z0-9]+>\s*")
# The clock the verifier reads; a test may replace it to check Slack's published example.
CLOCK: Clock = Clock()


def verify(body: bytes, headers: Any, secret: str, clock: Clock | None = None) -> bool:
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    if not str(timestamp).isdigit():
        return False  # the verifier would raise on a non-numeric timestamp
    return SignatureVerifier(secret, clock or CLOCK).is_valid(
        body=body, timestamp=timestamp, signature=headers.get("X-Slack-Signature", "")
    )


def _authenticate(request: HttpRequest) -> None:
    if not verify(request.body, request.headers, settings.SLACK_SIGNING_SECRET):
        raise unauthorized("invalid or expired Slack signature (X-Slack-Signature, X-Slack-Request-Timestamp)")


@webhook(Kind.SLACK)
def slack_events(request: HttpRequest) -> HttpResponse:
    _authenticate(request)
    payload = json_body(request)
    kind = payload.get("type")
    if kind == "url_verification":
        return JsonResponse({"challenge": str(payload.get("challenge", ""))})
    if kind != "event_callback":
        return JsonResponse({"ok": True, "ignored": kind})
    event = obj(payload.get("event"), "event")
    event_id = payload.get("event_id")
    if not event_id or not event:
        raise bad_request("event_callback without event_id or event")
    if event.get("type") not in ("message", "app_mention") or event.get("bot_id") or event.get("subtype"):
        # Our own messages come back as events too; answering them would loop.
        return JsonResponse({"ok": True, "ignored": event.get("type")})
    user_id, channel, text = str(event.get("user") or ""), str(event.get("channel") or ""), str(event.get("text") or "")
    if not user_id or not channel:
        raise bad_request("message event without user or channel")
    text = _MENTION.sub("", text)
    thread = str(event.get("thread_ts") or "")
    with transaction.atomic(durable=True):
        user = identify(Kind.SLACK, user_id)
        # Keyed by the message, not the event: a mention arrives both as `message` and as
        # `app_mention` (two event ids), and Slack's retries keep the same ts.
        key = f"msg:{channel}:{event.get('ts') or event_id}"
        stored = record_update(Kind.SLACK, key, user=user, address=channel, reply_to=thread, text=text)
        if stored is None:
            return duplicate(JsonResponse({"ok": True, "duplicate": True}))
        router.handle(Inbound(kind=Kind.SLACK, address=channel, conversation=channel, platform_user_id=user_id,
                              user=user, text=text, reply_to=thread, update_id=stored.pk))
    return JsonResponse({"ok": True})


@webhook(Kind.SLACK)
def slack_interactions(request: HttpRequest) -> HttpResponse:
    _authenticate(request)
    form = parse_qs(request.body.decode("utf-8", errors="replace"))
    try:
        payload = without_nul(json.loads(form["payload"][0]))
    except (KeyError, IndexError, ValueError):
        raise bad_request("interactions must carry a form field 'payload' holding JSON") from None
    if not isinstance(payload, dict):
        raise bad_request("the interaction payload must be a JSON object")
    if payload.get("type") != "block_actions":
        return JsonResponse({"ok": True, "ignored": payload.get("type")})
    actions = array(payload.get("actions"), "actions")
    person = obj(payload.get("user"), "user")
    container = obj(payload.get("container"), "container")
    user_id = str(person.get("id") or "")
    channel = str(obj(payload.get("channel"), "channel").get("id") or container.get("channel_id") or "")
    message_ts = str(obj(payload.get("message"), "message").get("ts") or container.get("message_ts") or "")
    if not actions or not user_id:
        raise bad_request("block_actions without actions or user")
    action = obj(actions[0], "actions[0]")
    parsed = parse_callback_data(str(action.get("value") or ""))
    if parsed is None:
        return JsonResponse({"ok": True, "ignored": action.get("action_id")})
    approval_id, decision = parsed
    with transaction.atomic(durable=True):
        user = identify(Kind.SLACK, user_id)
        external = f"action:{action.get('action_ts') or payload.get('trigger_id')}:{user_id}"
        stored = record_update(Kind.SLACK, external, user=user, address=channel, reply_to=message_ts,
                               text=f"[button] {action.get('value')}")
        if stored is None:
            return duplicate(JsonResponse({"ok": True, "duplicate": True}))
        inbound = Inbound(kind=Kind.SLACK, address=channel, conversation=channel, platform_user_id=user_id, user=user,
                          text=str(action.get("value")), reply_to=message_ts, update_id=stored.pk,
                          display_name=str(person.get("username") or ""))
        outcome = router.decide(inbound, approval_id, decision)
        if outcome.startswith("Refused"):
            # Said in the approval message's thread, so the channel sees who tried and why not.
            router.reply(inbound, f"{inbound.who}: {outcome}")
    # Success is shown by editing the message (the approval_decided receiver); Slack only
    # needs an empty 200 within 3 seconds.
    return HttpResponse(status=200)
