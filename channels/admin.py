from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from channels.models import ChannelTarget, Identity, InboundUpdate, MessageState, NotificationStorm, OutboundMessage


@admin.register(ChannelTarget)
class ChannelTargetAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "address", "min_severity", "namespace_regex", "approvals", "digest", "enabled")
    list_filter = ("kind", "enabled", "min_severity")
    filter_horizontal = ("clusters",)
    search_fields = ("name", "address")


@admin.register(Identity)
class IdentityAdmin(admin.ModelAdmin):
    list_display = ("platform", "platform_user_id", "user", "display_name", "created_at")
    list_filter = ("platform",)
    search_fields = ("platform_user_id", "user__username", "display_name")
    autocomplete_fields = ("user",)


@admin.register(OutboundMessage)
class OutboundMessageAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "address", "operation", "state", "text_start", "attempts", "created_at", "delivered_at",
                    "last_error")
    list_filter = ("state", "kind", "operation")
    search_fields = ("address", "text", "dedupe_key")
    readonly_fields = [f.name for f in OutboundMessage._meta.fields]
    actions = ["retry_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="text")
    def text_start(self, message: OutboundMessage) -> str:
        first = message.text.split("\n", 1)[0].replace("**", "").replace("`", "")
        return first if len(first) <= 100 else first[:99] + "…"

    @admin.action(description="Retry delivery now (failed or queued messages)")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[OutboundMessage]) -> None:
        from django.utils import timezone

        from channels.tasks import deliver_message

        ids = list(queryset.filter(state__in=[MessageState.FAILED, MessageState.QUEUED]).values_list("pk", flat=True))
        OutboundMessage.objects.filter(pk__in=ids).update(state=MessageState.QUEUED, next_attempt_at=timezone.now(),
                                                          attempts=0)
        for pk in ids:
            deliver_message.delay(pk)
        self.message_user(request, f"{len(ids)} message(s) queued for delivery.")


@admin.register(InboundUpdate)
class InboundUpdateAdmin(admin.ModelAdmin):
    list_display = ("platform", "external_id", "user", "address", "text", "received_at")
    list_filter = ("platform",)
    search_fields = ("external_id", "text")
    readonly_fields = [f.name for f in InboundUpdate._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(NotificationStorm)
class NotificationStormAdmin(admin.ModelAdmin):
    list_display = ("id", "cluster", "started_at", "last_at", "ended_at", "incidents", "held_back")
    list_filter = ("cluster",)
    readonly_fields = [f.name for f in NotificationStorm._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # storms are detected, never made by hand
