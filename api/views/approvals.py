"""Approvals: list (pending by default), detail, decide -- through `decide_approval`, so every
rule of the gate holds here as in chat: only its approvers decide, HIGH risk needs someone
other than the requester, a decided or expired approval stays as it is, refusals are audited."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db import transaction
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import exceptions, mixins, serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from agents.models import Approval, Risk
from api.models import Scope
from api.problems import Conflict
from api.views.base import ApiViewSet
from playbooks.models import StepRun


class StepRefSerializer(serializers.Serializer):
    step = serializers.IntegerField()
    run = serializers.IntegerField()
    incident = serializers.IntegerField()


class ApprovalSerializer(serializers.ModelSerializer):
    decided_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    arguments = serializers.DictField(read_only=True)
    approvers = serializers.ListField(child=serializers.CharField(), read_only=True,
                                      help_text="Who may decide; empty: the approvers group.")
    seconds_left = serializers.SerializerMethodField()
    may_decide = serializers.SerializerMethodField(help_text="Whether the caller may decide it.")
    step = serializers.SerializerMethodField(help_text="The playbook step run that waits for it, if any.")

    class Meta:
        model = Approval
        fields = ["id", "code", "tool", "arguments", "risk", "reason", "origin", "requester", "approvers", "state",
                  "requested_at", "expires_at", "seconds_left", "decided_by", "decided_at", "decision_reason",
                  "used_at", "may_decide", "step"]
        read_only_fields = fields

    def get_seconds_left(self, approval: Approval) -> int:
        from agents.approvals import seconds_left

        return seconds_left(approval) if approval.state == Approval.State.PENDING else 0

    def get_may_decide(self, approval: Approval) -> bool:
        from agents.approvals import can_decide

        request = self.context.get("request")
        return approval.state == Approval.State.PENDING and can_decide(getattr(request, "user", None), approval)

    @extend_schema_field(StepRefSerializer(allow_null=True))
    def get_step(self, approval: Approval) -> dict[str, int] | None:
        steps = self.context.get("steps")
        if steps is None:
            steps = _steps_of([approval])
        return steps.get(approval.pk)


def _steps_of(approvals: list[Approval]) -> dict[int, dict[str, int]]:
    rows = StepRun.objects.filter(approval__in=[a.pk for a in approvals]).values_list(
        "approval_id", "pk", "run_id", "run__incident_id")
    return {approval: {"step": step, "run": run, "incident": incident} for approval, step, run, incident in rows}


class DecideSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["approve", "reject"])
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True)


STATES = [*Approval.State.choices, ("all", "every state")]


class ApprovalFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=STATES, method="by_state",
                                        help_text="Default: pending. `all` lists every state.")
    tool = django_filters.CharFilter(max_length=128)
    risk = django_filters.ChoiceFilter(choices=Risk.choices)
    origin = django_filters.ChoiceFilter(choices=Approval.Origin.choices)

    class Meta:
        model = Approval
        fields = ["state", "tool", "risk", "origin"]

    def by_state(self, queryset: Any, name: str, value: str) -> Any:
        return queryset if value == "all" else queryset.filter(state=value)

    @property
    def qs(self) -> Any:
        queryset = super().qs
        if not self.data.get("state"):
            queryset = queryset.filter(state=Approval.State.PENDING)
        return queryset


class ApprovalViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Approvals of risky tool calls, newest first."""

    queryset = Approval.objects.select_related("decided_by")
    serializer_class = ApprovalSerializer
    filterset_class = ApprovalFilter
    scopes = {"decide": Scope.DECIDE}

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "steps": None}

    def list(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        assert page is not None  # always paginated
        context = {**self.get_serializer_context(), "steps": _steps_of(page)}
        return self.get_paginated_response(ApprovalSerializer(page, many=True, context=context).data)

    @extend_schema(request=DecideSerializer, responses=ApprovalSerializer, filters=False)
    @action(detail=True, methods=["post"], filter_backends=[])
    def decide(self, request: Any, pk: str | None = None) -> Response:
        """Approve or reject. Refused (403) for someone who may not decide it or, on HIGH risk, for
        its requester; 409 once it is decided or expired. An approved playbook step runs at once,
        as when approved in chat."""
        from agents.approvals import ApprovalError, decide_approval

        body = DecideSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        approval = self.get_object()
        refused: ApprovalError | None = None
        with transaction.atomic():
            try:
                approval = decide_approval(approval.pk, request.user, body.validated_data["decision"],
                                           body.validated_data.get("reason", ""))
            except ApprovalError as exc:
                refused = exc  # its audit row commits with this block
        if refused is not None:
            if refused.reason in ("already_decided", "expired"):
                raise Conflict(str(refused))
            if refused.reason == "not_found":
                raise exceptions.NotFound(str(refused))
            raise exceptions.PermissionDenied(str(refused))
        approval.refresh_from_db()
        return Response(ApprovalSerializer(approval, context=self.get_serializer_context()).data)
