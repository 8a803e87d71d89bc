"""Admin for silences and maintenance windows: who made each, when it ends, what it covers.

A silence is created through the same service as chat and the console (validated matchers, an
audit row, applied at once to the incidents already open); matchers are typed as text
(`namespace="shop", workload=~"cart|web"`). A silence is never edited afterwards (that would
change what was silenced behind the timeline's back): it is expired, and a new one made."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from playbooks.models import MaintenanceWindow, Silence


class SilenceForm(forms.ModelForm):
    matchers_text = forms.CharField(
        label="Matchers", max_length=2000,
        help_text='e.g. namespace="shop", workload=~"cart|web". Names: cluster, namespace, kind, workload, '
                  "finding_type, alertname; any other name is a workload label. Ops: =, !=, =~, !~.",
    )
    duration = forms.CharField(label="For", max_length=20, initial="2h", help_text="30m, 2h, 1h30m, 3d.")

    class Meta:
        model = Silence
        fields = ["reason"]

    def clean_matchers_text(self) -> list[dict[str, str]]:
        from playbooks.silences import MatcherError, parse_matchers

        try:
            return [m.as_dict() for m in parse_matchers(self.cleaned_data["matchers_text"])]
        except MatcherError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def _post_clean(self) -> None:
        if self._errors:
            return  # the fields' own errors say what is wrong
        self.instance.matchers = self.cleaned_data["matchers_text"]
        self.instance.ends_at = timezone.now() + self.cleaned_data["duration"]
        super()._post_clean()

    def clean_duration(self) -> timedelta:
        from playbooks.silences import MatcherError, parse_duration

        try:
            return parse_duration(self.cleaned_data["duration"])
        except MatcherError as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.register(Silence)
class SilenceAdmin(admin.ModelAdmin):
    list_display = ["id", "matchers_words", "state_words", "starts_at", "ends_at", "created_by_name", "reason",
                    "expired_by"]
    list_filter = ["ends_at", "created_by_name"]
    search_fields = ["reason", "created_by_name"]
    date_hierarchy = "ends_at"
    actions = ["expire_now"]
    readonly_fields = ["matchers_words", "starts_at", "ends_at", "reason", "created_by_name", "created_at", "expired_by",
                       "applied_at", "swept_at"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = SilenceForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["matchers_text", "duration", "reason"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # expired and made anew, never edited

    def save_model(self, request: HttpRequest, obj: Silence, form: Any, change: bool) -> None:
        from playbooks.services.silences import create_silence

        created = create_silence(matchers_input=form.cleaned_data["matchers_text"],
                                 duration=form.cleaned_data["duration"], reason=form.cleaned_data["reason"],
                                 user=request.user, via="admin")
        obj.pk = created.pk
        obj._state.adding = False

    @admin.display(description="matches")
    def matchers_words(self, obj: Silence) -> str:
        from playbooks.silences import matchers_text

        return matchers_text(obj.matchers)

    @admin.display(description="state")
    def state_words(self, obj: Silence) -> str:
        return obj.state

    @admin.action(description="Expire the selected silences now")
    def expire_now(self, request: HttpRequest, queryset: QuerySet[Silence]) -> None:
        from playbooks.services.silences import SilenceRefused, expire_silence

        done = 0
        for silence in queryset.filter(ends_at__gt=timezone.now()):
            try:
                expire_silence(silence.pk, user=request.user, via="admin")
                done += 1
            except SilenceRefused as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"{done} silence{'s' if done != 1 else ''} expired.")


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(admin.ModelAdmin):
    list_display = ["name", "scope", "schedule", "duration_minutes", "time_zone", "now_or_next", "notifications",
                    "enabled", "created_by_name", "created_at"]
    list_filter = ["enabled", "cluster", "notifications"]
    search_fields = ["name", "namespace", "reason"]
    fields = ["name", "cluster", "namespace", "schedule", "duration_minutes", "time_zone", "notifications", "reason",
              "enabled", "created_by_name", "created_at"]
    readonly_fields = ["created_by_name", "created_at"]

    def save_model(self, request: HttpRequest, obj: MaintenanceWindow, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user
            obj.created_by_name = f"admin:{request.user.get_username()}"[:150]
        super().save_model(request, obj, form, change)

    @admin.display(description="covers")
    def scope(self, obj: MaintenanceWindow) -> str:
        from playbooks.maintenance import scope_words

        return scope_words(obj)

    @admin.display(description="on now / next")
    def now_or_next(self, obj: MaintenanceWindow) -> str:
        from playbooks.maintenance import current_period, end_words, next_period

        on = current_period(obj)
        if on is not None:
            return f"on now, until {end_words(on)}"
        upcoming = next_period(obj)
        if upcoming is None:
            return "never"
        return f"{upcoming.start:%Y-%m-%d %H:%M} {obj.time_zone}"
