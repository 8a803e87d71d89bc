"""POST /api/webhooks/telegram: Telegram's webhook, authenticated by the secret token that
setWebhook registered (header X-Telegram-Bot-Api-Secret-Token), deduplicated by update_id."""

from __future__ import annotations

import hmac
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from telegram import Update

from channels import router
from channels.inbound import Inbound, identify, record_update
from channels.models import Kind, Operation
from channels.services import queue_message
from channels.transport import parse_callback_data
from channels.webhooks import bad_request, duplicate, json_body, unauthorized, webhook

log = structlog.get_logger(__name__)


@webhook(Kind.TELEGRAM)
def telegram_webhook(request: HttpRequest) -> HttpResponse:
    secret = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
    if not secret or not hmac.compare_digest(secret.encode(), settings.TELEGRAM_WEBHOOK_SECRET.encode()):
        raise unauthorized("missing or wrong X-Telegram-Bot-Api-Secret-Token")
    data = json_body(request)
    problem = _shape_problem(data)
    if problem:
        raise bad_request(f"not a Telegram update: {problem}")
    try:
        update = Update.de_json(data, None)
    except (KeyError, TypeError, ValueError) as exc:
        raise bad_request(f"not a Telegram update: {exc}") from None
    if update is None or not isinstance(data.get("update_id"), int):
        raise bad_request("not a Telegram update: update_id is missing")

    with transaction.atomic(durable=True):
        if update.callback_query is not None:
            if not _callback(update):
                return duplicate(JsonResponse({"ok": True, "duplicate": True}))
        elif update.message is not None and update.message.text and update.effective_user:
            # Only new messages: an edited "/k8s restart ..." must not ask a second time.
            message = update.message
            user = identify(Kind.TELEGRAM, str(update.effective_user.id))
            stored = record_update(Kind.TELEGRAM, str(update.update_id), user=user, address=str(message.chat_id),
                                   reply_to=str(message.message_id), text=message.text)
            if stored is None:
                return duplicate(JsonResponse({"ok": True, "duplicate": True}))
            router.handle(Inbound(
                kind=Kind.TELEGRAM,
                address=str(message.chat_id),
                conversation=str(message.chat_id),
                platform_user_id=str(update.effective_user.id),
                user=user,
                text=message.text,
                reply_to=str(message.message_id),
                display_name=update.effective_user.full_name,
                update_id=stored.pk,
            ))
        else:
            # Joins, edits, stickers...: acknowledged and remembered so a redelivery is cheap.
            if record_update(Kind.TELEGRAM, str(update.update_id)) is None:
                return duplicate(JsonResponse({"ok": True, "duplicate": True}))
    return JsonResponse({"ok": True})


# The fields we read, with the types the Bot API gives them. python-telegram-bot trusts its
# server and builds whatever it is handed (a dict as text, no chat), so we check first.
_USER = {"id": int, "is_bot": bool, "first_name": str}
_CHAT = {"id": int, "type": str}
_MESSAGE = {"message_id": int, "date": int, "chat": _CHAT}
_OPTIONAL = {"text": str, "from": _USER, "username": str, "last_name": str, "data": str, "message": _MESSAGE,
             "title": str}
_UPDATE_KINDS = {"message": _MESSAGE, "edited_message": _MESSAGE, "channel_post": _MESSAGE,
                 "callback_query": {"id": str, "from": _USER, "chat_instance": str}}


def _shape_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the update's fields we use, as `message.chat.id: ...`, or None."""
    if type(data.get("update_id")) is not int:
        return "update_id must be an integer"
    for kind, shape in _UPDATE_KINDS.items():
        if kind in data:
            return _object_problem(data[kind], shape, kind)
    return None


def _object_problem(value: Any, shape: dict[str, Any], path: str) -> str | None:
    if not isinstance(value, dict):
        return f"{path} must be an object"
    fields = {**{k: (v, True) for k, v in shape.items()},
              **{k: (v, False) for k, v in _OPTIONAL.items() if k not in shape and k in value}}
    for name, (kind, required) in fields.items():
        where = f"{path}.{name}"
        if name not in value:
            if required:
                return f"{where} is missing"
            continue
        if isinstance(kind, dict):
            problem = _object_problem(value[name], kind, where)
            if problem:
                return problem
        elif type(value[name]) is not kind:
            return f"{where} must be {'an integer' if kind is int else 'a ' + kind.__name__.replace('str', 'string')}"
    return None


def _callback(update: Update) -> bool:
    """A button press: decide as the presser, answer the callback query (the spinner on their
    button), and on refusal say why in the message's thread. False for a redelivery."""
    query = update.callback_query
    assert query is not None
    user = identify(Kind.TELEGRAM, str(query.from_user.id))
    message = query.message
    chat_id = str(message.chat.id) if message is not None else ""
    stored = record_update(Kind.TELEGRAM, str(update.update_id), user=user, address=chat_id,
                           text=f"[button] {query.data or ''}")
    if stored is None:
        return False
    parsed = parse_callback_data(query.data or "")
    if parsed is None:
        queue_message(kind=Kind.TELEGRAM, address=chat_id, text="This button is not one of mine.",
                      operation=Operation.ANSWER_CALLBACK, callback_id=query.id, alert=True)
        return True
    approval_id, decision = parsed
    inbound = Inbound(kind=Kind.TELEGRAM, address=chat_id, conversation=chat_id,
                      platform_user_id=str(query.from_user.id), user=user, text=query.data or "",
                      reply_to=str(message.message_id) if message is not None else "",
                      display_name=query.from_user.full_name, update_id=stored.pk)
    outcome = router.decide(inbound, approval_id, decision)
    refused = outcome.startswith("Refused")
    queue_message(kind=Kind.TELEGRAM, address=chat_id, text=outcome, operation=Operation.ANSWER_CALLBACK,
                  callback_id=query.id, alert=refused)
    if refused and chat_id:
        router.reply(inbound, f"{inbound.who}: {outcome}")
    return True
