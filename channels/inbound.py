"""What every inbound path shares: who is this person, have we seen this update before, and
the conversation context a reply needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from channels import metrics
from channels.models import Identity, InboundUpdate

log = structlog.get_logger(__name__)


@dataclass
class Inbound:
    """One person's message (or button press) on one platform, ready for the router."""

    kind: str
    address: str  # where replies go now: chat id, channel id, "interaction:<token>", "user:<id>"
    conversation: str  # the stable chat/channel id, for messages sent later (outcomes, answers)
    platform_user_id: str
    user: Any  # the Django user the identity maps to, or None
    text: str
    reply_to: str = ""  # thread: Telegram message id, Slack thread ts
    display_name: str = ""
    update_id: int | None = None  # the InboundUpdate row

    @property
    def who(self) -> str:
        if self.user is not None:
            return self.user.get_username()
        return f"{self.kind} user {self.platform_user_id}" + (f" ({self.display_name})" if self.display_name else "")

    def reply_context(self) -> dict[str, str]:
        """What a later task needs to answer in the same place (stored with the question)."""
        return {"kind": self.kind, "address": self.conversation, "reply_to": self.reply_to}


def identify(platform: str, platform_user_id: str) -> Any:
    """The Django user behind a platform account, or None. A chat id is never looked up here."""
    if not platform_user_id:
        return None
    identity = Identity.objects.select_related("user").filter(platform=platform, platform_user_id=platform_user_id).first()
    if identity is None or not identity.user.is_active:
        return None
    return identity.user


def record_update(platform: str, external_id: str, *, user: Any = None, address: str = "", reply_to: str = "",
                  text: str = "") -> InboundUpdate | None:
    """Remember an inbound update; None when it was seen before (a redelivery: answer 200, do nothing)."""
    try:
        with transaction.atomic():
            return InboundUpdate.objects.create(
                platform=platform, external_id=str(external_id)[:100], user=user, address=address[:500],
                reply_to=reply_to[:100], text=text[:4000],
            )
    except IntegrityError:
        metrics.INBOUND_WEBHOOKS.labels(platform, "duplicate").inc()
        log.info("inbound_duplicate", platform=platform, external_id=external_id)
        return None


def web_user(user_id: int) -> Any:
    return get_user_model().objects.filter(pk=user_id, is_active=True).first()
