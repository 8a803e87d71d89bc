"""API tokens in the admin: an admin issues a token for any user (the clear text is shown once,
in the message after saving), sees each token's state and last use, and revokes tokens. Tokens
are never edited or deleted: a revoked token stays as the record of what it could do."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest

from api.models import ApiToken, Scope
from api.tokens import MAX_DAYS, create_token, revoke_token


class IssueForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple, initial=["read"])
    days = forms.IntegerField(min_value=1, max_value=MAX_DAYS, initial=90, help_text="The token expires after this.")

    class Meta:
        model = ApiToken
        fields = ("user", "name", "scopes")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = get_user_model().objects.filter(is_active=True)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "user", "scope_list", "state", "created_at", "expires_at", "last_used_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")
    actions = ("revoke",)
    readonly_fields = ("user", "name", "prefix", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at")

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = IssueForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else ()

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else ("user", "name", "scopes", "days")

    @admin.display(description="scopes")
    def scope_list(self, token: ApiToken) -> str:
        return ", ".join(token.scopes or [])

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            return  # nothing of a token is edited
        # The form checked what create_token checks (an active user, a name, known scopes, 1-365 days).
        token, clear = create_token(form.cleaned_data["user"], form.cleaned_data["name"],
                                    list(form.cleaned_data["scopes"]), form.cleaned_data["days"],
                                    by=request.user, via="admin")
        obj.pk = token.pk
        obj.__dict__.update({k: v for k, v in token.__dict__.items() if not k.startswith("_")})
        obj._state.adding = False
        messages.warning(request, f"Token for {token.user.get_username()}: {clear} -- copy it now, it is shown only "
                         "this once.")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        revoked = sum(revoke_token(token, by=request.user, via="admin") for token in queryset.select_related("user"))
        self.message_user(request, f"{revoked} token(s) revoked.", messages.SUCCESS if revoked else messages.WARNING)
