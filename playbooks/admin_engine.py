"""Admin for rules, playbooks (steps inline) and runs (step runs inline).

Every change to a rule or a playbook made here is written to the append-only `AuditEntry`
with the before and after snapshots (the same shape `playbooks export` writes). Runs are
read-only records; the actions start a proposed run or cancel an active one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from playbooks import engine
from playbooks.models import Playbook, PlaybookRun, Rule, Step, StepRun
from playbooks.rules import FINDING_TYPES, validate_playbook_steps
from playbooks.yaml_io import audit_change, playbook_snapshot, rule_snapshot


def _actor(request: HttpRequest) -> str:
    return f"admin:{request.user.get_username()}"


class RuleForm(forms.ModelForm):
    finding_types = forms.MultipleChoiceField(
        choices=[(t, t) for t in FINDING_TYPES], required=False, widget=forms.CheckboxSelectMultiple,
        help_text="Matches when any of the incident's current finding types is checked.",
    )
    alert_names = forms.CharField(
        required=False, help_text="Alertmanager alertnames, comma-separated (KubePodCrashLooping, ...)."
    )

    class Meta:
        model = Rule
        fields = (
            "name", "description", "enabled", "priority", "playbook", "auto_run", "finding_types", "alert_names",
            "evidence", "namespace_regex", "label_selector", "min_severity", "clusters", "cooldown_seconds",
            "approver_group", "approvers", "in_maintenance",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["alert_names"] = ", ".join(self.instance.alert_names or [])
        if "in_maintenance" in self.fields:
            self.fields["in_maintenance"].required = False  # a form that does not send it keeps the default

    def clean_in_maintenance(self) -> str:
        return self.cleaned_data.get("in_maintenance") or "wait"

    def clean_alert_names(self) -> list[str]:
        return [name.strip() for name in (self.cleaned_data.get("alert_names") or "").split(",") if name.strip()]


class AuditedAdmin(admin.ModelAdmin):
    """Writes one AuditEntry per saved or deleted object, after its inlines and M2Ms are saved."""

    audit_kind = ""
    # The YAML export's snapshot of one object: the audit records the same shape GitOps diffs.
    snapshot: Callable[[Any], dict[str, Any]]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        before = self.snapshot(type(obj).objects.get(pk=obj.pk)) if change and obj.pk else None
        request._aiops_audit_before = before  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        obj = form.instance
        before = getattr(request, "_aiops_audit_before", None)
        after = self.snapshot(obj)
        if before != after:
            audit_change(_actor(request), self.audit_kind, obj.name, "updated" if change else "created",
                         before=before, after=after, via="admin")

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        before = self.snapshot(obj)
        super().delete_model(request, obj)
        audit_change(_actor(request), self.audit_kind, before["name"], "deleted", before=before, after=None, via="admin")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for obj in queryset:
            self.delete_model(request, obj)


@admin.register(Rule)
class RuleAdmin(AuditedAdmin):
    audit_kind = "rule"
    form = RuleForm
    list_display = ("name", "enabled", "priority", "playbook", "types", "min_severity", "auto_run", "cooldown_seconds",
                    "outcome_figures")
    list_filter = ("enabled", "auto_run", "min_severity", "playbook", "clusters")
    list_editable = ("enabled", "priority")
    search_fields = ("name", "description", "playbook__name", "namespace_regex")
    filter_horizontal = ("clusters", "approvers")
    autocomplete_fields = ("playbook",)
    fieldsets = (
        (None, {"fields": ("name", "description", "enabled", "priority", "playbook", "auto_run")}),
        ("Matching", {"fields": ("finding_types", "alert_names", "evidence", "namespace_regex", "label_selector",
                                 "min_severity", "clusters", "cooldown_seconds")}),
        ("Approvals", {"fields": ("approver_group", "approvers")}),
        ("Escalation", {"fields": ("escalate_after", "escalation_window_seconds")}),
        ("Maintenance windows", {"fields": ("in_maintenance",)}),
        ("Outcomes", {"fields": ("outcome_figures",)}),
    )
    readonly_fields = ("outcome_figures",)

    @admin.display(description="outcomes of its runs")
    def outcome_figures(self, rule: Rule) -> str:
        from playbooks.history import figures_text, outcome_figures

        return figures_text(outcome_figures(rule.runs.all())) if rule.pk else "no runs yet"

    @admin.display(description="finding types / alerts")
    def types(self, rule: Rule) -> str:
        return ", ".join([*(rule.finding_types or []), *(rule.alert_names or [])])

    snapshot = staticmethod(rule_snapshot)


class StepFormSet(BaseInlineFormSet):
    """Conditions may read earlier steps (`steps.<name>.ok`): checked with the playbook's steps
    as this form orders them, not as the database had them."""

    def clean(self) -> None:
        super().clean()
        forms_in_order = sorted(
            (form for form in self.forms
             if getattr(form, "cleaned_data", None) and not form.cleaned_data.get("DELETE")),
            key=lambda form: form.cleaned_data.get("order") or 0,
        )
        steps = [(form.cleaned_data.get("name") or "", form.cleaned_data.get("when") or "") for form in forms_in_order]
        for index, message in validate_playbook_steps(steps).items():
            forms_in_order[index].add_error("when", message)


class StepInline(admin.TabularInline):
    model = Step
    formset = StepFormSet
    extra = 0
    fields = ("order", "name", "kind", "tool", "args", "when", "on_failure", "timeout_seconds")
    ordering = ("order",)


@admin.register(Playbook)
class PlaybookAdmin(AuditedAdmin):
    audit_kind = "playbook"
    inlines = [StepInline]
    list_display = ("name", "enabled", "step_count", "rule_names", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("name", "description", "steps__tool", "rules__name")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(_steps=Count("steps", distinct=True)).prefetch_related("rules")

    @admin.display(description="steps", ordering="_steps")
    def step_count(self, playbook: Playbook) -> int:
        return playbook._steps  # type: ignore[attr-defined]

    @admin.display(description="rules")
    def rule_names(self, playbook: Playbook) -> str:
        return ", ".join(rule.name for rule in playbook.rules.all())

    snapshot = staticmethod(playbook_snapshot)


class StepRunInline(admin.TabularInline):
    model = StepRun
    extra = 0
    can_delete = False
    fields = ("order", "name", "kind", "tool", "risk", "state", "attempts", "rendered_args", "approval", "output",
              "error", "started_at", "finished_at")
    readonly_fields = fields
    ordering = ("order",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(PlaybookRun)
class PlaybookRunAdmin(admin.ModelAdmin):
    inlines = [StepRunInline]
    list_display = ("id", "playbook_name", "incident", "cluster", "state", "outcome", "dry_run", "created_at",
                    "finished_at")
    list_filter = ("state", "outcome", "playbook_name", "cluster", "dry_run")
    search_fields = ("playbook_name", "incident__workload_name", "incident__namespace", "summary")
    date_hierarchy = "created_at"
    list_select_related = ("incident", "cluster")
    readonly_fields = ("incident", "cluster", "rule", "playbook", "playbook_name", "state", "outcome", "dry_run",
                       "context", "summary", "created_at", "started_at", "finished_at", "updated_at")
    actions = ("start_runs", "cancel_runs")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Start the selected proposed runs", permissions=["change"])
    def start_runs(self, request: HttpRequest, queryset: QuerySet) -> None:
        started = sum(engine.start_proposed_run(run.pk, by=_actor(request)) for run in queryset)
        self.message_user(request, f"{started} run(s) started.", messages.SUCCESS if started else messages.WARNING)

    @admin.action(description="Cancel the selected active runs", permissions=["change"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet) -> None:
        cancelled = sum(engine.cancel_run(run.pk, by=_actor(request)) for run in queryset)
        self.message_user(request, f"{cancelled} run(s) cancelled.", messages.SUCCESS if cancelled else messages.WARNING)
