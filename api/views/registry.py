"""Clusters (never their credentials), the tool registry, and the audit log (read-only)."""

from __future__ import annotations

import copy
from typing import Any

import django_filters
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from rest_framework import exceptions, mixins, serializers

from agents.models import AuditEntry, MCPTool, Risk
from api.filters import UTCDateTimeFilter
from api.models import Scope
from api.problems import Conflict
from api.views.base import ApiViewSet
from k8s.models import Cluster


class ClusterSerializer(serializers.ModelSerializer):
    """`kubeconfig_path` is a reference (a file the processes read), written, never returned:
    `has_kubeconfig` says whether one is set. Credentials never pass through the API."""

    kubeconfig_path = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=500)
    has_kubeconfig = serializers.SerializerMethodField()
    reachable = serializers.SerializerMethodField(
        help_text="The last poll succeeded and fewer than AIOPS_UNREACHABLE_AFTER polls failed since.")
    ignored_namespaces = serializers.ListField(child=serializers.CharField(max_length=253), required=False,
                                               max_length=1000)

    class Meta:
        model = Cluster
        fields = ["id", "name", "kubeconfig_path", "has_kubeconfig", "context", "in_cluster", "enabled", "is_default",
                  "poll_interval", "ignored_namespaces", "prometheus_url", "reachable", "last_poll_at",
                  "last_success_at", "consecutive_failures", "last_error", "detection_mode", "detection_mode_since",
                  "created_at", "updated_at"]
        read_only_fields = ["id", "has_kubeconfig", "reachable", "last_poll_at", "last_success_at",
                            "consecutive_failures", "last_error", "detection_mode", "detection_mode_since",
                            "created_at", "updated_at"]
        extra_kwargs = {"name": {"validators": []}, "is_default": {"validators": []}}
        validators: list[Any] = []  # the model's full_clean checks uniqueness and constraints (validate)

    def get_has_kubeconfig(self, cluster: Cluster) -> bool:
        return bool(cluster.kubeconfig_path)

    def get_reachable(self, cluster: Cluster) -> bool:
        return cluster.last_success_at is not None and cluster.consecutive_failures < settings.AIOPS_UNREACHABLE_AFTER

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The admin's check: the model's own validation (field validators and constraints)."""
        instance = copy.copy(self.instance) if self.instance is not None else Cluster()
        for key, value in attrs.items():
            setattr(instance, key, value)
        try:
            instance.full_clean(exclude=["last_error", "watcher", "watch_error"])
        except DjangoValidationError as exc:
            raise exceptions.ValidationError({("" if k == "__all__" else k): v for k, v in exc.message_dict.items()}) \
                from None
        return attrs

    def save(self, **kwargs: Any) -> Cluster:
        try:
            with transaction.atomic():
                return super().save(**kwargs)
        except IntegrityError as exc:  # a race with another writer on name or the default
            raise Conflict(f"the cluster conflicts with another: {str(exc).splitlines()[0][:200]}") from None


class ClusterViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                     mixins.UpdateModelMixin, ApiViewSet):
    """Clusters the agent watches, with their reachability."""

    queryset = Cluster.objects.all()
    serializer_class = ClusterSerializer
    filter_backends: list[Any] = []
    write_scope = Scope.ADMIN
    model_perms = {"create": ("k8s.add_cluster",), "update": ("k8s.change_cluster",),
                   "partial_update": ("k8s.change_cluster",)}


class ToolSerializer(serializers.ModelSerializer):
    server = serializers.SlugRelatedField(slug_field="name", read_only=True)
    input_schema = serializers.DictField(read_only=True)
    verbs = serializers.ListField(child=serializers.CharField(), read_only=True)
    resources = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = MCPTool
        fields = ["name", "server", "description", "risk", "input_schema", "verbs", "resources", "read_only_hint",
                  "destructive_hint", "enabled", "available", "synced_at"]
        read_only_fields = fields


class ToolFilter(django_filters.FilterSet):
    risk = django_filters.ChoiceFilter(choices=Risk.choices)
    server = django_filters.CharFilter(field_name="server__name", max_length=63)

    class Meta:
        model = MCPTool
        fields = ["risk", "server", "enabled", "available"]


class ToolViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """The tool registry: every tool the agent may call, its server and its risk class."""

    queryset = MCPTool.objects.select_related("server")
    serializer_class = ToolSerializer
    filterset_class = ToolFilter
    lookup_field = "name"
    lookup_value_regex = "[A-Za-z0-9_.:-]{1,128}"


class AuditSerializer(serializers.ModelSerializer):
    arguments = serializers.DictField(read_only=True)
    effect = serializers.ChoiceField(choices=AuditEntry._meta.get_field("effect").choices, allow_blank=True,
                                     read_only=True, help_text="Completions of mutating calls: did it change the cluster?")

    class Meta:
        model = AuditEntry
        fields = ["id", "created_at", "actor", "action", "tool", "server", "risk", "arguments", "reason", "outcome",
                  "detail", "duration_ms", "approval", "effect"]
        read_only_fields = fields


class AuditFilter(django_filters.FilterSet):
    action = django_filters.ChoiceFilter(choices=AuditEntry.Action.choices)
    actor = django_filters.CharFilter(lookup_expr="icontains", max_length=200)
    tool = django_filters.CharFilter(max_length=128)
    outcome = django_filters.CharFilter(max_length=20)
    approval = django_filters.NumberFilter(field_name="approval_id", min_value=1, max_value=2**63 - 1)
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEntry
        fields = ["action", "actor", "tool", "outcome", "approval", "since", "until"]


class AuditViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """The append-only audit log, newest first: every action on a cluster, every decision and
    refusal, every change of configuration, every change made through this API."""

    queryset = AuditEntry.objects.all()
    serializer_class = AuditSerializer
    filterset_class = AuditFilter
    scopes = {"list": Scope.ADMIN, "retrieve": Scope.ADMIN}
    model_perms = {"list": ("agents.view_auditentry",), "retrieve": ("agents.view_auditentry",)}
