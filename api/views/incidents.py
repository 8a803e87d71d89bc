"""Incidents: list (filters and search), detail, timeline, close."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import django_filters
from django.db import transaction
from django.db.models import Q
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from api.filters import UTCDateTimeFilter
from api.models import Scope
from api.problems import Conflict
from api.views.base import ApiViewSet
from api.views.runs import RunSerializer
from playbooks.models import Incident, PlaybookRun


def iso(value: datetime | None) -> str | None:
    """As DRF's DateTimeField writes it (UTC as `Z`)."""
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# What a list shows: the evidence, the RCA report and the alerts stay in the database.
LIST_COLUMNS = ("id", "state", "severity", "source", "cluster__name", "workload_kind", "namespace", "workload_name",
                "fingerprint", "primary_type", "finding_types", "alertname", "title", "affected_pods", "opened_at",
                "last_seen_at", "resolved_at", "count", "parent")


class IncidentSerializer(serializers.ModelSerializer):
    cluster = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    workload_key = serializers.CharField(read_only=True)
    what = serializers.SerializerMethodField(help_text="The finding in plain words.")
    finding_types = serializers.ListField(child=serializers.CharField(), read_only=True)
    affected_pods = serializers.ListField(child=serializers.CharField(), read_only=True)
    parent = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True,
                                                help_text="The incident whose cause explains this one (correlation).")

    class Meta:
        model = Incident
        fields = ["id", "state", "severity", "source", "cluster", "workload_kind", "namespace", "workload_name",
                  "workload_key", "primary_type", "finding_types", "alertname", "title", "what", "affected_pods",
                  "opened_at", "last_seen_at", "resolved_at", "count", "parent"]
        read_only_fields = fields

    def get_what(self, incident: Incident) -> str:
        from channels.formatting import incident_what

        return incident_what(incident)

    def to_representation(self, incident: Incident | dict[str, Any]) -> dict[str, Any]:
        """The declared fields, written out: a page of 50 is the API's hottest answer, and DRF's
        generic field walk was most of its time (the schema still comes from the fields above).
        A list's page comes as rows (dicts of LIST_COLUMNS), a detail as the model."""
        if isinstance(incident, dict):
            return self._from_row(incident)
        return {
            "id": incident.pk, "state": incident.state, "severity": incident.severity, "source": incident.source,
            "cluster": incident.cluster.name if incident.cluster_id else None,
            "workload_kind": incident.workload_kind, "namespace": incident.namespace,
            "workload_name": incident.workload_name, "workload_key": incident.workload_key,
            "primary_type": incident.primary_type, "finding_types": [str(t) for t in incident.finding_types or []],
            "alertname": incident.alertname, "title": incident.title, "what": self.get_what(incident),
            "affected_pods": [str(p) for p in incident.affected_pods or []],
            "opened_at": iso(incident.opened_at), "last_seen_at": iso(incident.last_seen_at),
            "resolved_at": iso(incident.resolved_at), "count": incident.count, "parent": incident.parent_id,
        }


    def _from_row(self, row: dict[str, Any]) -> dict[str, Any]:
        from channels.formatting import incident_what

        # The model's own rules for the key and the words, applied to the row's values.
        fields = SimpleNamespace(**row)
        return {
            "id": row["id"], "state": row["state"], "severity": row["severity"], "source": row["source"],
            "cluster": row["cluster__name"], "workload_kind": row["workload_kind"], "namespace": row["namespace"],
            "workload_name": row["workload_name"], "workload_key": Incident.workload_key.fget(fields),  # type: ignore[attr-defined]
            "primary_type": row["primary_type"], "finding_types": [str(t) for t in row["finding_types"] or []],
            "alertname": row["alertname"], "title": row["title"], "what": incident_what(fields),
            "affected_pods": [str(p) for p in row["affected_pods"] or []],
            "opened_at": iso(row["opened_at"]), "last_seen_at": iso(row["last_seen_at"]),
            "resolved_at": iso(row["resolved_at"]), "count": row["count"], "parent": row["parent"],
        }


class IncidentDetailSerializer(IncidentSerializer):
    evidence = serializers.DictField(read_only=True)
    rca_report = serializers.DictField(read_only=True, allow_null=True)
    no_run_reason = serializers.DictField(read_only=True, allow_null=True)
    runs = RunSerializer(many=True, read_only=True)
    correlation = serializers.DictField(read_only=True, allow_null=True,
                                        help_text="Why this incident is a child of `parent`: cause, text, node, ...")
    children = serializers.PrimaryKeyRelatedField(many=True, read_only=True,
                                                  help_text="Incidents whose cause is this one (correlation).")

    class Meta(IncidentSerializer.Meta):
        fields = [*IncidentSerializer.Meta.fields, "evidence", "rca_report", "no_run_reason", "correlation", "children",
                  "runs"]
        read_only_fields = fields

    def to_representation(self, incident: Incident) -> dict[str, Any]:
        return {**super().to_representation(incident), "evidence": incident.evidence or {},
                "rca_report": incident.rca_report, "no_run_reason": incident.no_run_reason,
                "correlation": incident.correlation,
                "children": list(incident.children.order_by("pk").values_list("pk", flat=True)),
                "runs": RunSerializer(incident.runs.all(), many=True).data}


class TimelineLineSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    kind = serializers.CharField(help_text="event, step, approval, message or run")
    word = serializers.CharField()
    summary = serializers.CharField()
    detail = serializers.CharField(allow_blank=True)
    actor = serializers.CharField(allow_blank=True)
    approval = serializers.IntegerField(allow_null=True, help_text="A pending approval this line asks for.")


class CloseSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, help_text="Why it is closed (goes to the timeline and the audit).")


class IncidentFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=Incident.State.choices)
    severity = django_filters.ChoiceFilter(choices=Incident.Severity.choices)
    source = django_filters.ChoiceFilter(choices=Incident.Source.choices)
    cluster = django_filters.CharFilter(field_name="cluster__name", max_length=63, help_text="Cluster name.")
    namespace = django_filters.CharFilter(max_length=253)
    type = django_filters.CharFilter(method="by_type", max_length=200,
                                     help_text="A finding type (crash_loop, ...) or an Alertmanager alertname.")
    opened_since = UTCDateTimeFilter(field_name="opened_at", lookup_expr="gte")
    search = django_filters.CharFilter(method="by_search", max_length=200,
                                       help_text="Part of the workload's name, namespace, alertname or title.")

    class Meta:
        model = Incident
        fields = ["state", "severity", "source", "cluster", "namespace", "type", "opened_since", "search"]

    def by_type(self, queryset: Any, name: str, value: str) -> Any:
        return queryset.filter(Q(primary_type=value) | Q(finding_types__contains=[value]) | Q(alertname=value))

    def by_search(self, queryset: Any, name: str, value: str) -> Any:
        return queryset.filter(Q(workload_name__icontains=value) | Q(namespace__icontains=value)
                               | Q(alertname__icontains=value) | Q(title__icontains=value))


class IncidentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Incidents: one per workload (or alert) and fault episode, newest first."""

    queryset = Incident.objects.select_related("cluster")
    serializer_class = IncidentSerializer
    filterset_class = IncidentFilter
    scopes = {"close": Scope.DECIDE}

    def get_serializer_class(self) -> Any:
        if self.action == "retrieve":
            return IncidentDetailSerializer
        if self.action == "close":
            return CloseSerializer
        return IncidentSerializer

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()
        if self.action == "list":
            # Rows as dicts: no model instances for a page nobody changes (`IncidentSerializer` reads both).
            queryset = queryset.values(*LIST_COLUMNS)
        if self.action == "retrieve":
            runs = PlaybookRun.objects.select_related("cluster", "rule").order_by("-created_at")
            from django.db.models import Prefetch

            queryset = queryset.prefetch_related(Prefetch("runs", queryset=runs))
        return queryset

    @extend_schema(responses=TimelineLineSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def timeline(self, request: Any, pk: str | None = None) -> Response:
        """Everything that happened to the incident, newest first: detections, steps, approvals,
        messages -- the console's timeline, as data."""
        from channels.web.timeline import timeline

        incident = self.get_object()
        lines, _pending = timeline(incident, request.user)
        return Response([{
            "at": line.at, "kind": line.kind, "word": line.word, "summary": line.summary,
            "detail": line.detail or "", "actor": line.actor or "",
            "approval": line.approval.pk if line.approval is not None else None,
        } for line in lines])

    @extend_schema(request=CloseSerializer, responses=IncidentDetailSerializer, filters=False)
    @action(detail=True, methods=["post"], filter_backends=[])
    def close(self, request: Any, pk: str | None = None) -> Response:
        """Close an open incident by hand (its runs and pending approvals are cancelled): for those
        who may decide its approvals. Closing a closed incident changes nothing."""
        from api.tokens import via
        from playbooks.services.manual import ActionRefused, close_incident

        body = CloseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        incident = get_object_or_404(Incident, pk=pk)
        refused: ActionRefused | None = None
        with transaction.atomic():
            try:
                close_incident(incident.pk, request.user, body.validated_data["reason"], via=via(request))
            except ActionRefused as exc:
                refused = exc  # its audit row commits with this block
        if refused is not None:
            raise_refusal(refused)
        return Response(IncidentDetailSerializer(self.get_queryset().get(pk=incident.pk)).data)


def raise_refusal(refused: Exception) -> None:
    """An `ActionRefused` as the HTTP answer its code calls for."""
    from rest_framework import exceptions

    code = getattr(refused, "code", "forbidden")
    if code == "not_found":
        raise exceptions.NotFound(str(refused))
    if code == "conflict":
        raise Conflict(str(refused))
    if code == "invalid":
        raise exceptions.ValidationError({"playbook": [str(refused)]})
    raise exceptions.PermissionDenied(str(refused))
