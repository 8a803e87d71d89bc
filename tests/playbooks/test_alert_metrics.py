"""Alertmanager deliveries show on the metrics operators scrape: received alerts by status and outcome."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import REGISTRY

from playbooks.models import Incident

pytestmark = pytest.mark.django_db
URL = "/api/webhooks/alertmanager"
TOKEN = "am-metrics-token"


def _alert(status: str, fingerprint: str, pod: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": pod, "severity": "critical"},
        "annotations": {"summary": "crash looping"},
        "startsAt": "2026-11-23T14:55:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-23T15:05:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    }


def _batch(*alerts: dict[str, Any]) -> str:
    return json.dumps({
        "receiver": "aiops", "status": alerts[0]["status"], "alerts": list(alerts),
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0,
    })


def _received(status: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("aiops_alertmanager_alerts_total", {"status": status, "outcome": outcome}) or 0.0


def test_received_alerts_are_counted_by_status_and_outcome(client, settings, fake_cluster) -> None:  # type: ignore[no-untyped-def]
    settings.AIOPS_ALERTMANAGER_TOKEN = TOKEN
    keys = [("firing", "stored"), ("firing", "duplicate"), ("resolved", "stored")]
    before = {key: _received(*key) for key in keys}

    def post(body: str) -> None:
        response = client.post(URL, data=body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200, response.content

    firing = _batch(_alert("firing", "aaaa000011112222", "web-7d9f8b6c5d-x2k4p"),
                    _alert("firing", "bbbb000011112222", "api-5c6d7e8f9a-q7w8e"))
    post(firing)
    post(firing)  # Alertmanager redelivers: counted, but as duplicates
    post(_batch(_alert("resolved", "aaaa000011112222", "web-7d9f8b6c5d-x2k4p")))

    moved = {key: _received(*key) - before[key] for key in keys}
    assert moved == {("firing", "stored"): 2, ("firing", "duplicate"): 2, ("resolved", "stored"): 1}
    assert Incident.objects.filter(state="resolved").count() == 1  # the counts follow what was really stored
