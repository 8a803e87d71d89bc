"""POST /api/webhooks/discord/interactions: Discord's interactions endpoint (no gateway).

Every request is signed with the application's Ed25519 key: `X-Signature-Ed25519` over
`X-Signature-Timestamp + body`, checked with PyNaCl against DISCORD_PUBLIC_KEY (Discord itself
probes the endpoint with bad signatures and expects 401). PING is answered with PONG;
`/aiops <command>` (and `/aiops ask <question>`) is deferred and answered by follow-ups through
the outbox; approval buttons decide as the presser.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from channels import router
from channels.discord.transport import INTERACTION_PREFIX
from channels.inbound import Inbound, identify, record_update
from channels.models import Kind
from channels.transport import parse_callback_data
from channels.webhooks import array, bad_request, duplicate, json_body, obj, unauthorized, webhook

log = structlog.get_logger(__name__)

PING, APPLICATION_COMMAND, MESSAGE_COMPONENT = 1, 2, 3
PONG, CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE = 1, 4, 5, 6
EPHEMERAL = 1 << 6
REPLAY_WINDOW_S = 300  # as Slack's: a captured request cannot be replayed later


def verify(body: bytes, signature: str, timestamp: str, public_key: str, now: float | None = None) -> bool:
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > REPLAY_WINDOW_S:
        return False
    try:
        VerifyKey(bytes.fromhex(public_key)).verify(timestamp.encode() + body, bytes.fromhex(signature))
    except (BadSignatureError, ValueError):
        return False
    return True


def _flatten(options: Any, where: str = "data.options") -> list[str]:
    """Slash-command options -> words: sub-commands by name, values as given."""
    words: list[str] = []
    for index, option in enumerate(array(options, where)):
        option = obj(option, f"{where}[{index}]")
        if option.get("type") in (1, 2):  # SUB_COMMAND, SUB_COMMAND_GROUP
            words.append(str(option.get("name", "")))
            words += _flatten(option.get("options"), f"{where}[{index}].options")
        elif option.get("value") is not None:
            words.append(str(option["value"]))
    return words


@webhook(Kind.DISCORD)
def discord_interactions(request: HttpRequest) -> HttpResponse:
    signature = request.headers.get("X-Signature-Ed25519", "")
    timestamp = request.headers.get("X-Signature-Timestamp", "")
    if not verify(request.body, signature, timestamp, settings.DISCORD_PUBLIC_KEY):
        raise unauthorized("invalid request signature")
    interaction = json_body(request)
    kind = interaction.get("type")
    if kind == PING:
        return JsonResponse({"type": PONG})
    if kind not in (APPLICATION_COMMAND, MESSAGE_COMPONENT):
        raise bad_request(f"unsupported interaction type {kind!r}")
    person = obj(obj(interaction.get("member"), "member").get("user"), "member.user") or obj(
        interaction.get("user"), "user")
    user_id = str(person.get("id") or "")
    channel = str(interaction.get("channel_id") or obj(interaction.get("channel"), "channel").get("id") or "")
    token = str(interaction.get("token") or "")
    if not user_id or not channel or not token or not interaction.get("id"):
        raise bad_request("interaction without id, token, user or channel")
    data = obj(interaction.get("data"), "data")

    with transaction.atomic(durable=True):
        user = identify(Kind.DISCORD, user_id)
        if kind == MESSAGE_COMPONENT:
            text = f"[button] {data.get('custom_id', '')}"
        else:
            text = " ".join(_flatten(data.get("options"))).strip() or "help"
        stored = record_update(Kind.DISCORD, str(interaction["id"]), user=user, address=f"{INTERACTION_PREFIX}{token}",
                               text=text)
        if stored is None:
            return duplicate(JsonResponse({"type": DEFERRED_UPDATE_MESSAGE if kind == MESSAGE_COMPONENT
                                           else DEFERRED_CHANNEL_MESSAGE}))
        inbound = Inbound(kind=Kind.DISCORD, address=f"{INTERACTION_PREFIX}{token}", conversation=channel,
                          platform_user_id=user_id, user=user, text=text, update_id=stored.pk,
                          display_name=str(person.get("global_name") or person.get("username") or ""))
        if kind == MESSAGE_COMPONENT:
            parsed = parse_callback_data(str(data.get("custom_id") or ""))
            if parsed is None:
                return JsonResponse({"type": CHANNEL_MESSAGE, "data": {"content": "This button is not one of mine.",
                                                                      "flags": EPHEMERAL}})
            outcome = router.decide(inbound, parsed[0], parsed[1])
            if outcome.startswith("Refused"):
                # Only the presser sees it; the message and its buttons stay for an approver.
                return JsonResponse({"type": CHANNEL_MESSAGE, "data": {
                    "content": outcome.replace("`", ""), "flags": EPHEMERAL, "allowed_mentions": {"parse": []}}})
            # The approval_decided receiver edits the message for everyone.
            return JsonResponse({"type": DEFERRED_UPDATE_MESSAGE})
        if text.lower().startswith("ask "):
            inbound.text = text[4:].strip()
        elif not router.is_decision(text):
            inbound.text = "/" + text.lstrip("/!")
        router.handle(inbound)
    # "Thinking...": the answer arrives as a follow-up delivered by the outbox.
    return JsonResponse({"type": DEFERRED_CHANNEL_MESSAGE})
