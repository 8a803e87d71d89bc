"""Silences and maintenance windows: when the agent stays quiet on purpose.

A `Silence` is a set of Alertmanager-style matchers (`namespace="shop"`, `workload=~"cart|web"`,
`app="web"`) with a start, an end, who made it and why. An incident that opens while one matches
is recorded (its timeline says so) but sends no notification and starts no run; when the silence
ends and the incident is still open, it is announced as if it had just opened.

A `MaintenanceWindow` recurs (a cron expression, a duration, a time zone) over a cluster or a
namespace: during it no MEDIUM/HIGH step is requested (the run waits for the end, or hands off,
per rule) and notifications are marked as in maintenance, or held until the window ends.

The database is the truth for both: "is it active" is a comparison with `now`, never a TTL key.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

__all__ = ["MaintenanceWindow", "Silence"]


class Silence(models.Model):
    matchers = models.JSONField(
        default=list,
        help_text='Alertmanager-style: [{"name": "namespace", "op": "=", "value": "shop"}, ...]; ops =, !=, =~, !~. '
                  "Names: cluster, namespace, kind, workload, finding_type, alertname; any other name is a workload label.",
    )
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField()
    reason = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    # Who, in words, as the audit log names actors: "web:alice", "telegram:bob", "admin:carol".
    created_by_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Ended early by a person (ends_at is then moved to that moment).
    expired_by = models.CharField(max_length=150, blank=True)
    # The sweep applied the silence to the incidents already open when it started.
    applied_at = models.DateTimeField(null=True, blank=True)
    # The sweep handled its end: the incidents it held were announced (or moved to another silence).
    swept_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-ends_at", "-id"]
        indexes = [models.Index(fields=["ends_at", "swept_at"], name="playbooks_silence_end")]
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=models.F("starts_at")), name="playbooks_silence_ends_after_start"),
        ]

    def __str__(self) -> str:
        return f"silence #{self.pk}"

    def is_active(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.starts_at <= now < self.ends_at

    @property
    def state(self) -> str:
        now = timezone.now()
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def clean(self) -> None:
        from playbooks.silences import MatcherError, parse_matchers

        try:
            parse_matchers(self.matchers)
        except MatcherError as exc:
            raise ValidationError(f"matchers: {exc}") from exc
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError("the end must be after the start")

    @classmethod
    def active_q(cls, now: datetime) -> Q:
        return Q(starts_at__lte=now, ends_at__gt=now)


class MaintenanceWindow(models.Model):
    class Notifications(models.TextChoices):
        MARK = "mark", "sent, marked as in maintenance"
        HOLD = "hold", "held until the window ends"

    name = models.CharField(max_length=100, unique=True)
    cluster = models.ForeignKey("k8s.Cluster", null=True, blank=True, on_delete=models.CASCADE, related_name="+",
                                help_text="Empty = every cluster.")
    namespace = models.CharField(max_length=253, blank=True, help_text="Empty = the whole cluster.")
    schedule = models.CharField(max_length=100, help_text='When it starts, as a cron expression: "0 2 * * 6" is Saturdays 02:00.')
    duration_minutes = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(7 * 24 * 60)])
    time_zone = models.CharField(max_length=64, default="UTC", help_text="IANA name, e.g. Europe/Berlin.")
    notifications = models.CharField(max_length=8, choices=Notifications.choices, default=Notifications.MARK)
    reason = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_by_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def duration(self) -> timedelta:
        return timedelta(minutes=self.duration_minutes)

    def clean(self) -> None:
        from playbooks.maintenance import schedule_error, zone_error

        errors = {}
        if message := schedule_error(self.schedule):
            errors["schedule"] = message
        if message := zone_error(self.time_zone):
            errors["time_zone"] = message
        if errors:
            raise ValidationError(errors)
