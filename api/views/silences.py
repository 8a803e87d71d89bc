"""Silences (list, detail, create, expire) and maintenance windows (list, detail), over the same
services as chat, the console and the admin."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import django_filters
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from api.models import Scope
from api.problems import Conflict
from api.views.base import ApiViewSet
from playbooks.models import Incident, MaintenanceWindow, Silence


class MatcherSerializer(serializers.Serializer):
    name = serializers.CharField()
    op = serializers.ChoiceField(choices=["=", "!=", "=~", "!~"])
    value = serializers.CharField(allow_blank=True)


class SilenceSerializer(serializers.ModelSerializer):
    matchers = MatcherSerializer(many=True, read_only=True)
    matchers_text = serializers.SerializerMethodField(help_text='As Alertmanager writes them: namespace="shop", ...')
    state = serializers.CharField(read_only=True, help_text="pending, active or expired")
    holds = serializers.SerializerMethodField(help_text="Open incidents it holds now.")

    class Meta:
        model = Silence
        fields = ["id", "matchers", "matchers_text", "state", "starts_at", "ends_at", "reason", "created_by_name",
                  "created_at", "expired_by", "holds"]
        read_only_fields = fields

    def get_matchers_text(self, silence: Silence) -> str:
        from playbooks.silences import matchers_text

        return matchers_text(silence.matchers)

    def get_holds(self, silence: Silence) -> list[int]:
        return list(silence.incidents.filter(state=Incident.State.OPEN).order_by("pk").values_list("pk", flat=True))


class CreateSilenceSerializer(serializers.Serializer):
    matchers = serializers.JSONField(help_text='Text (`namespace="shop", workload=~"cart|web"`) or a list of '
                                               '{"name", "op", "value"}. Names: cluster, namespace, kind, workload, '
                                               "finding_type, alertname; any other name is a workload label.")
    duration = serializers.CharField(required=False, max_length=20, help_text="30m, 2h, 1h30m, 3d (or give ends_at).")
    starts_at = serializers.DateTimeField(required=False, help_text="Default: now.")
    ends_at = serializers.DateTimeField(required=False)
    reason = serializers.CharField(max_length=1000)

    def validate_matchers(self, value: Any) -> list[dict[str, str]]:
        from playbooks.silences import MatcherError, parse_matchers

        try:
            return [m.as_dict() for m in parse_matchers(value)]
        except MatcherError as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def validate_duration(self, value: str) -> timedelta:
        from playbooks.silences import MatcherError, parse_duration

        try:
            return parse_duration(value)
        except MatcherError as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if ("duration" in data) == ("ends_at" in data):
            raise serializers.ValidationError({"duration": ["give either a duration or ends_at"]})
        return data


class SilenceFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=[("active", "active"), ("pending", "pending"), ("expired", "expired")],
                                        method="by_state")

    class Meta:
        model = Silence
        fields = ["state"]

    def by_state(self, queryset: Any, name: str, value: str) -> Any:
        now = timezone.now()
        return queryset.filter({"active": Silence.active_q(now), "pending": Q(starts_at__gt=now),
                                "expired": Q(ends_at__lte=now)}[value])


def _refusal(refused: Any) -> None:
    if refused.code == "forbidden":
        raise exceptions.PermissionDenied(str(refused))
    if refused.code == "not_found":
        raise exceptions.NotFound(str(refused))
    if refused.code == "conflict":
        raise Conflict(str(refused))
    raise exceptions.ValidationError({refused.field or "non_field_errors": [str(refused)]})


class SilenceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Silences, newest first. An incident a silence matches is recorded but notifies nobody and
    starts no run until the silence ends; creating and expiring take the approvers' right."""

    queryset = Silence.objects.all()
    serializer_class = SilenceSerializer
    filterset_class = SilenceFilter
    scopes = {"create": Scope.DECIDE, "expire": Scope.DECIDE}

    def get_serializer_class(self) -> Any:
        return CreateSilenceSerializer if self.action == "create" else SilenceSerializer

    @extend_schema(request=CreateSilenceSerializer, responses={201: SilenceSerializer})
    def create(self, request: Any) -> Response:
        from api.tokens import via
        from playbooks.services.silences import SilenceRefused, create_silence

        body = CreateSilenceSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        refused: SilenceRefused | None = None
        with transaction.atomic():
            try:
                silence = create_silence(matchers_input=data["matchers"], duration=data.get("duration"),
                                         starts_at=data.get("starts_at"), ends_at=data.get("ends_at"),
                                         reason=data["reason"], user=request.user, via=via(request))
            except SilenceRefused as exc:
                refused = exc  # its audit row commits with this block
        if refused is not None:
            _refusal(refused)
        return Response(SilenceSerializer(silence).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=SilenceSerializer, filters=False)
    @action(detail=True, methods=["post"], filter_backends=[])
    def expire(self, request: Any, pk: str | None = None) -> Response:
        """End the silence now: what it held and is still failing is announced, and its rules run."""
        from api.tokens import via
        from playbooks.services.silences import SilenceRefused, expire_silence

        silence = self.get_object()
        refused: SilenceRefused | None = None
        with transaction.atomic():
            try:
                expire_silence(silence.pk, user=request.user, via=via(request))
            except SilenceRefused as exc:
                refused = exc
        if refused is not None:
            _refusal(refused)
        return Response(SilenceSerializer(Silence.objects.get(pk=silence.pk)).data)


class MaintenanceWindowSerializer(serializers.ModelSerializer):
    cluster = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    on_now = serializers.SerializerMethodField()
    current_or_next_start = serializers.SerializerMethodField()
    current_or_next_end = serializers.SerializerMethodField()

    class Meta:
        model = MaintenanceWindow
        fields = ["id", "name", "cluster", "namespace", "schedule", "duration_minutes", "time_zone", "notifications",
                  "reason", "enabled", "created_by_name", "created_at", "on_now", "current_or_next_start",
                  "current_or_next_end"]
        read_only_fields = fields

    def _period(self, window: MaintenanceWindow) -> Any:
        from playbooks.maintenance import next_period

        cache = self.context.setdefault("periods", {})
        if window.pk not in cache:
            cache[window.pk] = next_period(window)
        return cache[window.pk]

    def get_on_now(self, window: MaintenanceWindow) -> bool:
        period = self._period(window)
        return bool(window.enabled and period is not None and period.start <= timezone.now() < period.end)

    def get_current_or_next_start(self, window: MaintenanceWindow) -> str | None:
        period = self._period(window)
        return period.start.isoformat() if period else None

    def get_current_or_next_end(self, window: MaintenanceWindow) -> str | None:
        period = self._period(window)
        return period.end.isoformat() if period else None


class MaintenanceWindowViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Maintenance windows (managed in the admin): during one, MEDIUM/HIGH steps of the incidents it
    covers wait for its end or hand off, and notifications are marked or held."""

    queryset = MaintenanceWindow.objects.select_related("cluster")
    serializer_class = MaintenanceWindowSerializer
