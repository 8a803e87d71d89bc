"""Playbook runs: list, detail with its step runs, start (for an incident), cancel."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db import transaction
from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from api.models import Scope
from api.views.base import ApiViewSet
from playbooks.models import PlaybookRun, StepRun


class StepRunSerializer(serializers.ModelSerializer):
    args = serializers.JSONField(source="rendered_args", read_only=True, allow_null=True,
                                 help_text="The arguments the step ran with (after templates), once it ran.")

    class Meta:
        model = StepRun
        fields = ["id", "order", "name", "kind", "tool", "when", "state", "risk", "args", "output", "error",
                  "attempts", "approval", "queued_at", "started_at", "finished_at"]
        read_only_fields = fields


class RunSerializer(serializers.ModelSerializer):
    cluster = serializers.SlugRelatedField(slug_field="name", read_only=True)
    outcome = serializers.ChoiceField(choices=PlaybookRun.Outcome.choices, allow_blank=True, read_only=True,
                                      help_text="Empty until the run finishes.")
    rule = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)

    class Meta:
        model = PlaybookRun
        fields = ["id", "incident", "cluster", "rule", "playbook_name", "state", "outcome", "dry_run", "summary",
                  "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class RunDetailSerializer(RunSerializer):
    steps = StepRunSerializer(many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "steps"]
        read_only_fields = fields


class StartSerializer(serializers.Serializer):
    incident = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    playbook = serializers.RegexField(r"^[a-z0-9][a-z0-9_-]{0,99}\Z", required=False, allow_blank=True,
                                      help_text="Empty: the playbook of the best matching rule.")


class CancelSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True)


class RunFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=PlaybookRun.State.choices)
    outcome = django_filters.ChoiceFilter(choices=PlaybookRun.Outcome.choices)
    incident = django_filters.NumberFilter(field_name="incident_id", min_value=1, max_value=2**63 - 1)
    playbook = django_filters.CharFilter(field_name="playbook_name", max_length=100)

    class Meta:
        model = PlaybookRun
        fields = ["state", "outcome", "incident", "playbook"]


class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Playbook runs, newest first. Starting or cancelling one takes the right to decide its
    incident's approvals; each step still passes the risk gate."""

    queryset = PlaybookRun.objects.select_related("cluster", "rule")
    serializer_class = RunSerializer
    filterset_class = RunFilter
    scopes = {"create": Scope.DECIDE, "cancel": Scope.DECIDE}

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()
        if self.action == "retrieve":
            queryset = queryset.prefetch_related(Prefetch("steps", queryset=StepRun.objects.order_by("order")))
        return queryset

    def get_serializer_class(self) -> Any:
        return {"retrieve": RunDetailSerializer, "create": StartSerializer, "cancel": CancelSerializer}.get(
            self.action, RunSerializer)

    @extend_schema(request=StartSerializer, responses={201: RunDetailSerializer})
    def create(self, request: Any) -> Response:
        """Start a playbook for an incident (cooldowns, auto_run off or no match do not stop it;
        risky steps still ask for approval). Starts a proposed run when there is one."""
        from api.tokens import via
        from api.views.incidents import raise_refusal
        from playbooks.services.manual import ActionRefused, start_playbook

        body = StartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        refused: ActionRefused | None = None
        with transaction.atomic():
            try:
                run = start_playbook(body.validated_data["incident"], request.user,
                                     body.validated_data.get("playbook") or "", via=via(request))
            except ActionRefused as exc:
                refused = exc
        if refused is not None:
            raise_refusal(refused)
        return Response(RunDetailSerializer(self.get_queryset().prefetch_related("steps").get(pk=run.pk)).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=CancelSerializer, responses=RunDetailSerializer, filters=False)
    @action(detail=True, methods=["post"], filter_backends=[])
    def cancel(self, request: Any, pk: str | None = None) -> Response:
        """Cancel an active run and its pending approvals. A finished run stays as it ended."""
        from api.tokens import via
        from api.views.incidents import raise_refusal
        from playbooks.services.manual import ActionRefused, cancel_run

        body = CancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = self.get_object()
        refused: ActionRefused | None = None
        with transaction.atomic():
            try:
                cancel_run(run.pk, request.user, body.validated_data.get("reason", ""), via=via(request))
            except ActionRefused as exc:
                refused = exc
        if refused is not None:
            raise_refusal(refused)
        return Response(RunDetailSerializer(self.get_queryset().prefetch_related("steps").get(pk=run.pk)).data)
