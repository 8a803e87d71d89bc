"""Admin for the LLM room: model aliases (editable), preferences, conversations (read-only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from agents.models import Conversation, Message, ModelAlias, UserPreference


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    list_display = ["name", "model", "endpoint", "enabled", "updated_at"]
    list_filter = ["enabled"]
    search_fields = ["name", "model", "description"]
    # The URL is typed in full (local servers are http://); this only silences Django 6's change.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    @admin.display(description="endpoint")
    def endpoint(self, obj: ModelAlias) -> str:
        return obj.base_url or "LLM_BASE_URL"


@admin.register(UserPreference)
class UserPreferenceAdmin(admin.ModelAdmin):
    list_display = ["user", "model_alias", "updated_at"]
    search_fields = ["user__username", "model_alias"]
    autocomplete_fields = ["user"]


class MessageInline(admin.TabularInline):
    model = Message
    fk_name = "conversation"
    fields = ["created_at", "role", "content", "model", "prompt_tokens", "completion_tokens", "latency_ms", "state"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "channel_kind", "model_override", "active", "created_at", "updated_at"]
    list_filter = ["channel_kind", "active"]
    search_fields = ["user__username"]
    readonly_fields = ["user", "channel_kind", "created_at", "updated_at"]
    inlines = [MessageInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """The record of what was asked, what the model did (tool calls, approvals) and what it cost."""

    list_display = ["created_at", "conversation", "role", "short", "model", "prompt_tokens", "completion_tokens", "latency_ms", "state"]
    list_filter = ["role", "state", "model"]
    search_fields = ["content"]
    date_hierarchy = "created_at"

    @admin.display(description="content")
    def short(self, obj: Message) -> str:
        return obj.content[:80]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Message._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
