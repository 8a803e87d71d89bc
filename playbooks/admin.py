"""Admin for incidents (the event timeline inline) and the append-only cluster event log."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from playbooks.models import ClusterEvent, Incident


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class EventTimeline(ReadOnlyMixin, admin.TabularInline):
    model = ClusterEvent
    fk_name = "incident"
    fields = ["created_at", "kind", "finding_type", "alertname", "severity", "message"]
    readonly_fields = fields
    ordering = ["created_at", "id"]
    extra = 0
    show_change_link = True
    verbose_name_plural = "timeline"


class FindingTypeFilter(admin.SimpleListFilter):
    title = "finding type"
    parameter_name = "finding_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        from k8s.detectors import PRIMARY_ORDER

        return [(t, t) for t in PRIMARY_ORDER]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Incident]) -> QuerySet[Incident]:
        if self.value():
            return queryset.filter(finding_types__contains=[self.value()]) | queryset.filter(primary_type=self.value())
        return queryset


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    list_display = ["id", "state", "primary_type", "alertname", "severity", "cluster", "workload_kind", "namespace",
                    "workload_name", "count", "opened_at", "last_seen_at", "resolved_at"]
    list_filter = ["state", "severity", "source", "cluster", FindingTypeFilter, "alertname", "namespace", "workload_kind"]
    search_fields = ["workload_name", "namespace", "alertname", "title", "fingerprint"]
    date_hierarchy = "opened_at"
    list_select_related = ["cluster"]
    inlines = [EventTimeline]
    readonly_fields = [*(f.name for f in Incident._meta.fields), "workload_outcomes"]

    @admin.display(description="outcomes on this workload")
    def workload_outcomes(self, incident: Incident) -> str:
        from playbooks.history import figures_text, outcome_figures, workload_runs

        return figures_text(outcome_figures(workload_runs(incident)))

    actions = ["close_incidents", "start_playbooks"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # incidents come from the watch loop and Alertmanager

    def _by_hand(self, request: HttpRequest, queryset: QuerySet[Incident], verb: str) -> None:
        from django.contrib import messages
        from django.db import transaction

        from playbooks.services.manual import ActionRefused, close_incident, start_playbook

        for incident_id in queryset.values_list("pk", flat=True):
            # One transaction each: a refusal (audited) does not undo the others.
            with transaction.atomic():
                try:
                    if verb == "close":
                        text = close_incident(incident_id, request.user, f"closed in the admin by {request.user}",
                                              via="admin")
                    else:
                        run = start_playbook(incident_id, request.user, via="admin")
                        text = f"Started playbook {run.playbook_name} (run #{run.pk}) for incident #{incident_id}."
                except ActionRefused as exc:
                    self.message_user(request, f"Refused: {exc}", messages.ERROR)
                    continue
            self.message_user(request, text, messages.SUCCESS)

    @admin.action(description="Close the selected incidents (cancels their runs and approvals)")
    def close_incidents(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        self._by_hand(request, queryset, "close")

    @admin.action(description="Start the playbook anyway (its risky steps still ask for approval)")
    def start_playbooks(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        self._by_hand(request, queryset, "start")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ClusterEvent)
class ClusterEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["created_at", "kind", "cluster", "finding_type", "alertname", "workload_kind", "namespace",
                    "workload_name", "severity", "incident"]
    list_filter = ["kind", "cluster", "finding_type", "severity", "namespace"]
    search_fields = ["workload_name", "namespace", "alertname", "message"]
    date_hierarchy = "created_at"
    list_select_related = ["cluster", "incident"]
    readonly_fields = [f.name for f in ClusterEvent._meta.fields]
