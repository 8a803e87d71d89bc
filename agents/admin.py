"""Admin for MCP servers and tools, approvals (approve/reject with a reason) and the audit log
(read-only: nobody may add, change or delete an entry, superusers included)."""

from __future__ import annotations

import importlib.util
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse

from agents.approvals import ApprovalError, decide_approval
from agents.models import Approval, AuditEntry, MCPServer, MCPTool


class MCPToolInline(admin.TabularInline):
    model = MCPTool
    extra = 0
    fields = ["name", "risk", "enabled", "available", "read_only_hint", "destructive_hint"]
    readonly_fields = ["name", "available", "read_only_hint", "destructive_hint"]
    can_delete = False
    show_change_link = True


@admin.register(MCPServer)
class MCPServerAdmin(admin.ModelAdmin):
    list_display = ["name", "transport", "enabled", "builtin", "last_sync_at", "last_error"]
    list_filter = ["transport", "enabled", "builtin"]
    search_fields = ["name", "description", "command", "url"]
    readonly_fields = ["builtin", "last_sync_at", "last_error", "created_at", "updated_at"]
    inlines = [MCPToolInline]
    actions = ["sync_selected"]

    @admin.action(description="Sync tools from the selected servers")
    def sync_selected(self, request: HttpRequest, queryset: QuerySet[MCPServer]) -> None:
        from agents.registry import sync_server

        for server in queryset:
            try:
                tools = sync_server(server)
                self.message_user(request, f"{server.name}: {len(tools)} tools", messages.SUCCESS)
            except Exception as exc:  # noqa: BLE001  (shown to the admin per server)
                self.message_user(request, f"{server.name}: sync failed: {exc}", messages.ERROR)


@admin.register(MCPTool)
class MCPToolAdmin(admin.ModelAdmin):
    list_display = ["name", "server", "risk", "risk_set_by_admin", "enabled", "available", "synced_at"]
    list_filter = ["risk", "server", "enabled", "available"]
    search_fields = ["name", "remote_name", "description"]
    readonly_fields = ["server", "name", "remote_name", "description", "input_schema", "verbs", "resources",
                       "read_only_hint", "destructive_hint", "available", "synced_at"]
    fields = ["server", "name", "remote_name", "risk", "risk_set_by_admin", "enabled", "description",
              "input_schema", "verbs", "resources", "read_only_hint", "destructive_hint", "available", "synced_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tools come from `manage.py mcp sync`


class DecisionForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False,
                             help_text="Recorded in the audit log with your decision.")


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    list_display = ["code", "tool", "risk", "state", "origin", "requester", "requested_at", "expires_at",
                    "decided_by", "used_at"]
    list_filter = ["state", "risk", "origin", "tool"]
    search_fields = ["code", "tool", "reason", "requester", "origin_ref"]
    actions = ["approve_selected", "reject_selected"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Approval._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # approvals are requested by playbooks, chat and the LLM

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the audit log points at them

    def _decide(self, request: HttpRequest, queryset: QuerySet[Approval], decision: str) -> HttpResponse | None:
        if "apply" in request.POST:
            form = DecisionForm(request.POST)
            if form.is_valid():
                for approval in queryset:
                    try:
                        decide_approval(approval.pk, request.user, decision, form.cleaned_data["reason"])
                        self.message_user(request, f"{approval.code}: {decision}d", messages.SUCCESS)
                    except ApprovalError as exc:
                        self.message_user(request, f"{approval.code}: {exc}", messages.ERROR)
                return HttpResponseRedirect(request.get_full_path())
        else:
            form = DecisionForm()
        context = {
            **self.admin_site.each_context(request),
            "title": f"{decision.capitalize()} {queryset.count()} approval(s)",
            "approvals": queryset,
            "form": form,
            "action": f"{decision}_selected",
            "decision": decision,
            "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/agents/approval/decide.html", context)

    @admin.action(description="Approve the selected approvals (with a reason)")
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Approval]) -> HttpResponse | None:
        return self._decide(request, queryset, "approve")

    @admin.action(description="Reject the selected approvals (with a reason)")
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[Approval]) -> HttpResponse | None:
        return self._decide(request, queryset, "reject")


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor", "action", "tool", "risk", "outcome", "duration_ms", "approval"]
    list_filter = ["action", "outcome", "risk", "server"]
    search_fields = ["actor", "tool", "reason", "detail", "idempotency_key"]
    date_hierarchy = "created_at"
    list_select_related = ["approval"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in AuditEntry._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# The LLM room keeps its admin in a module of its own; load it when it exists.
if importlib.util.find_spec("agents.admin_llm") is not None:
    from agents import admin_llm  # noqa: F401
