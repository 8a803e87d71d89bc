"""The Alertmanager webhook: authenticate, validate, persist in one transaction, answer fast."""

from __future__ import annotations

import hmac
import re
from typing import Any

import orjson
import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from rest_framework import serializers

from playbooks import metrics
from playbooks.services.alerts import ingest_alerts

log = structlog.get_logger(__name__)

MAX_ALERTS_PER_BATCH = 1000
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # Prometheus label names


class AlertSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["firing", "resolved"])
    labels = serializers.DictField(child=serializers.CharField(allow_blank=True, max_length=4096, trim_whitespace=False))
    annotations = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=16384, trim_whitespace=False), required=False, default=dict
    )
    startsAt = serializers.DateTimeField()
    endsAt = serializers.CharField(required=False, allow_blank=True)  # "0001-01-01T00:00:00Z" while firing
    generatorURL = serializers.CharField(required=False, allow_blank=True, max_length=2048)
    fingerprint = serializers.RegexField(r"^[0-9a-f]{1,64}$", error_messages={"invalid": "must be 1-64 lowercase hex digits"})

    def validate_labels(self, labels: dict[str, str]) -> dict[str, str]:
        if not labels.get("alertname"):
            raise serializers.ValidationError("must include a non-empty 'alertname'")
        bad = [name for name in labels if not _LABEL_NAME.match(name)]
        if bad:
            raise serializers.ValidationError(f"invalid label name {bad[0]!r}")
        return labels


class WebhookSerializer(serializers.Serializer):
    version = serializers.CharField(required=False)
    status = serializers.ChoiceField(choices=["firing", "resolved"])
    receiver = serializers.CharField(required=False, allow_blank=True)
    groupKey = serializers.CharField(required=False, allow_blank=True)
    truncatedAlerts = serializers.IntegerField(required=False, min_value=0)
    alerts = AlertSerializer(many=True, allow_empty=False, max_length=MAX_ALERTS_PER_BATCH)

    def validate_version(self, version: str) -> str:
        if version != "4":
            raise serializers.ValidationError(f"unsupported webhook version {version!r} (this endpoint speaks version 4)")
        return version


def _first_error(errors: Any, path: str = "") -> str:
    """The first error as `alerts[1].labels: must include ...`, for a reason a person can act on."""
    if isinstance(errors, dict):
        for key, value in errors.items():
            if value:
                step = f"[{key}]" if str(key).isdigit() else (f".{key}" if path else str(key))
                return _first_error(value, f"{path}{step}")
    if isinstance(errors, list):
        for index, value in enumerate(errors):
            if isinstance(value, (dict, list)) and value:
                return _first_error(value, f"{path}[{index}]" if isinstance(value, dict) else path)
            if value and not isinstance(value, (dict, list)):
                return f"{path}: {value}"
    return f"{path}: invalid"


def _refuse(status: int, reason: str, message: str, **extra: Any) -> JsonResponse:
    metrics.WEBHOOK_REJECTED.labels(reason).inc()
    response = JsonResponse({"error": message, **extra}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="alertmanager"'
    return response


@csrf_exempt
@require_POST
def alertmanager_webhook(request: HttpRequest) -> HttpResponse:
    token = settings.AIOPS_ALERTMANAGER_TOKEN
    if not token:
        # Disabled, not open: an endpoint without its secret must not accept anyone.
        metrics.WEBHOOK_REJECTED.labels("disabled").inc()
        return JsonResponse({"error": "the Alertmanager webhook is disabled (AIOPS_ALERTMANAGER_TOKEN is not set)"}, status=404)
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        log.warning("alertmanager_unauthorized", remote=request.META.get("REMOTE_ADDR"), had_header=bool(header))
        return _refuse(401, "unauthorized", "missing or wrong bearer token")
    try:
        payload = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        return _refuse(400, "invalid", f"body is not JSON: {exc}")
    if not isinstance(payload, dict):
        return _refuse(400, "invalid", "body must be a JSON object (Alertmanager webhook payload)")
    serializer = WebhookSerializer(data=payload)
    if not serializer.is_valid():
        reason = _first_error(serializer.errors)
        log.warning("alertmanager_invalid", reason=reason)
        return _refuse(400, "invalid", reason, errors=serializer.errors)
    alerts = serializer.validated_data["alerts"]
    result = ingest_alerts(alerts)
    return JsonResponse({"stored": result.stored, "duplicates": result.duplicates, "opened": result.opened,
                         "resolved": result.resolved})
