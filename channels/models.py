"""Where messages go (ChannelTarget), who people are (Identity), what is to be sent (the
OutboundMessage outbox) and what has been received (InboundUpdate, for deduplication)."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class Kind(models.TextChoices):
    TELEGRAM = "telegram", "Telegram"
    SLACK = "slack", "Slack"
    DISCORD = "discord", "Discord"
    WEB = "web", "Web console"


class Severity(models.TextChoices):
    INFO = "info", "info"
    WARNING = "warning", "warning"
    CRITICAL = "critical", "critical"


SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

# ASCII only (\\d and \\w would take other scripts' digits and letters) and whole-string (fullmatch).
_TELEGRAM_CHAT = re.compile(r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$", re.ASCII)
_SLACK_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,20}$")
_DISCORD_CHANNEL = re.compile(r"^\d{15,22}$", re.ASCII)
_DISCORD_WEBHOOK = re.compile(r"^https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/(?:v\d+/)?webhooks/\d+/[\w-]+$", re.ASCII)


def validate_address(kind: str, address: str) -> None:
    """A target's address must be something the platform can deliver to; say which form is expected."""
    if kind == Kind.TELEGRAM and not _TELEGRAM_CHAT.fullmatch(address):
        raise ValidationError({"address": f"{address!r} is not a Telegram chat id (e.g. -1001234567890 or @channel)."})
    if kind == Kind.SLACK and not _SLACK_CHANNEL.fullmatch(address):
        raise ValidationError({"address": f"{address!r} is not a Slack channel id (e.g. C0123456789)."})
    if kind == Kind.DISCORD and not (_DISCORD_CHANNEL.fullmatch(address) or _DISCORD_WEBHOOK.fullmatch(address)):
        raise ValidationError(
            {"address": f"{address!r} is not a Discord channel id or https://discord.com/api/webhooks/... URL."}
        )
    if kind == Kind.WEB and address != "feed":
        raise ValidationError({"address": "The web console has one feed; use the address 'feed'."})


class ChannelTarget(models.Model):
    """A chat, channel or webhook that receives notifications and approval requests."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    address = models.CharField(
        max_length=500,
        help_text="Telegram chat id, Slack channel id, Discord channel id or webhook URL; 'feed' for the web console.",
    )
    clusters = models.ManyToManyField(
        "k8s.Cluster", blank=True, related_name="+", help_text="Only events from these clusters; none = every cluster."
    )
    namespace_regex = models.CharField(
        max_length=200, blank=True, help_text="Only namespaces matching this regular expression (full match); empty = all."
    )
    min_severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    approvals = models.BooleanField(default=True, help_text="Send approval requests (with buttons) here.")
    digest = models.BooleanField(
        default=False,
        help_text="Batch info-level messages into one digest every AIOPS_DIGEST_INTERVAL seconds instead of one each.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "address"], name="channels_target_unique_address"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def clean(self) -> None:
        validate_address(self.kind, self.address)
        if self.namespace_regex:
            try:
                re.compile(self.namespace_regex)
            except re.error as exc:
                raise ValidationError({"namespace_regex": f"Not a regular expression: {exc}"}) from None

    def accepts(self, *, cluster_id: int | None, namespace: str, severity: str | None) -> bool:
        """Routing: does this target want an event from that cluster/namespace at that severity?"""
        if severity is not None and SEVERITY_RANK.get(severity, 0) < SEVERITY_RANK.get(self.min_severity, 0):
            return False
        if self.namespace_regex and not (namespace and re.fullmatch(self.namespace_regex, namespace)):
            return False
        cluster_ids = {c.pk for c in self.clusters.all()}
        return not cluster_ids or cluster_id in cluster_ids


class Identity(models.Model):
    """One person's account on a platform. A chat or channel id is never an identity."""

    platform = models.CharField(max_length=16, choices=[c for c in Kind.choices if c[0] != Kind.WEB])
    platform_user_id = models.CharField(max_length=64, help_text="Telegram user id, Slack user id (U...), Discord user id.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_identities")
    display_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "identities"
        constraints = [
            models.UniqueConstraint(fields=["platform", "platform_user_id"], name="channels_identity_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.platform}:{self.platform_user_id} -> {self.user}"


class Operation(models.TextChoices):
    SEND = "send", "send a message"
    EDIT = "edit", "edit a sent message"
    ANSWER_CALLBACK = "answer_callback", "answer a button press"


class MessageState(models.TextChoices):
    QUEUED = "queued", "queued"
    SENDING = "sending", "sending"
    DELIVERED = "delivered", "delivered"
    FAILED = "failed", "failed"


class OutboundMessage(models.Model):
    """The outbox: one row per message (or edit) to deliver, written in the transaction of the
    event that caused it and delivered by `channels.deliver_message`."""

    kind = models.CharField(max_length=16, choices=Kind.choices)
    target = models.ForeignKey(ChannelTarget, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    address = models.CharField(max_length=500, help_text="Where it goes: chat/channel id, webhook, interaction, user.")
    operation = models.CharField(max_length=16, choices=Operation.choices, default=Operation.SEND)
    text = models.TextField(help_text="Neutral markup: **bold**, `code`, ``` fenced blocks ```.")
    payload = models.JSONField(default=dict, blank=True, help_text="Buttons, reply thread, callback id.")
    dedupe_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    edit_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="edits")
    approval_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    incident_id = models.BigIntegerField(null=True, blank=True, db_index=True)

    state = models.CharField(max_length=16, choices=MessageState.choices, default=MessageState.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    platform_message_id = models.CharField(max_length=100, blank=True)
    parts_sent = models.PositiveIntegerField(default=0, help_text="Parts of a split message already delivered.")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="channels_outbox_due"),
            models.Index(fields=["kind", "address", "created_at"], name="channels_outbox_conversation"),
        ]

    def __str__(self) -> str:
        return f"{self.operation} {self.kind}:{self.address} ({self.state})"


class InboundUpdate(models.Model):
    """Every inbound update we accepted, keyed by the platform's own id: a redelivery of the
    same Telegram update_id, Slack event_id or Discord interaction id is answered 200 and
    ignored. Also the web console's transcript (platform 'web')."""

    platform = models.CharField(max_length=16, choices=Kind.choices)
    external_id = models.CharField(max_length=100)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    address = models.CharField(max_length=500, blank=True, help_text="Where replies go.")
    reply_to = models.CharField(max_length=100, blank=True, help_text="Thread: Telegram message id, Slack thread ts.")
    text = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["platform", "external_id"], name="channels_inbound_unique"),
        ]
        indexes = [models.Index(fields=["received_at"], name="channels_inbound_received")]

    def __str__(self) -> str:
        return f"{self.platform}:{self.external_id}"


class NotificationStorm(models.Model):
    """More than AIOPS_STORM_THRESHOLD incidents opened on one cluster within AIOPS_STORM_WINDOW
    seconds (`channels.storm`): while it lasts each target has one summary message (kept up to date)
    and only critical incidents get messages of their own. Over once a window passes without an
    incident opening."""

    cluster = models.ForeignKey("k8s.Cluster", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    started_at = models.DateTimeField()
    last_at = models.DateTimeField(help_text="When its latest incident opened.")
    ended_at = models.DateTimeField(null=True, blank=True)
    incidents = models.PositiveIntegerField(default=0, help_text="Incidents opened during the storm.")
    namespaces = models.JSONField(default=dict, blank=True, help_text="namespace -> incidents opened there.")
    causes = models.JSONField(default=dict, blank=True, help_text="parent incident id -> children opened (correlation).")
    held_back = models.PositiveIntegerField(default=0, help_text="Non-critical incidents that got no message of their own.")

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(fields=["cluster"], condition=models.Q(ended_at__isnull=True), nulls_distinct=False,
                                    name="channels_one_open_storm_per_cluster"),
        ]

    def __str__(self) -> str:
        return f"storm #{self.pk}: {self.incidents} incidents from {self.started_at:%H:%M:%S}"


class DigestEntry(models.Model):
    """An info-level message held for a target with `digest` on; sent in the next digest."""

    target = models.ForeignKey(ChannelTarget, on_delete=models.CASCADE, related_name="digest_entries")
    text = models.TextField()
    incident_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_in = models.ForeignKey(OutboundMessage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["target", "sent_in"], name="channels_digest_pending")]

    def __str__(self) -> str:
        return f"digest entry for {self.target_id}"
