"""A real Alertmanager (Debian's prometheus-alertmanager) delivers to our webhook over HTTP."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from playbooks.models import ClusterEvent, Incident
from tests.conftest import free_port, wait_for

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
TOKEN = "real-am-token"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(ALERTMANAGER is None, reason="prometheus-alertmanager is not installed (.ci/run installs it)"),
]



@pytest.fixture
def alertmanager(live_server, settings, tmp_path: Path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    settings.AIOPS_ALERTMANAGER_TOKEN = TOKEN
    url = f"{live_server.url}/api/webhooks/alertmanager"
    config = tmp_path / "alertmanager.yml"
    config.write_text(json.dumps({
        "route": {
            "receiver": "aiops", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "1s",
            "repeat_interval": "1h",
            "routes": [{"matchers": ['auth="none"'], "receiver": "no-token"}],
        },
        "receivers": [
            {"name": "aiops", "webhook_configs": [{
                "url": url, "send_resolved": True,
                "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}}}]},
            {"name": "no-token", "webhook_configs": [{"url": url, "send_resolved": True}]},
        ],
    }))
    port = free_port()
    log = open(tmp_path / "alertmanager.log", "wb")
    process = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=debug"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as response:  # noqa: S310 (loopback)
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(ready, timeout=20, message="alertmanager ready")
        yield base
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _post_alert(base: str, labels: dict[str, str], *, resolved: bool = False) -> None:
    now = datetime.now(UTC)
    alert: dict[str, Any] = {"labels": labels, "annotations": {"summary": f"{labels['alertname']} in test"},
                             "startsAt": (now - timedelta(minutes=1)).isoformat(), "generatorURL": "http://prometheus.test/graph"}
    if resolved:
        alert["endsAt"] = (now - timedelta(seconds=1)).isoformat()
    request = urllib.request.Request(f"{base}/api/v2/alerts", data=json.dumps([alert]).encode(),  # noqa: S310
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
        assert response.status == 200


def test_alertmanager_delivers_firing_then_resolved_with_the_token(alertmanager, transactional_db) -> None:  # type: ignore[no-untyped-def]
    labels = {"alertname": "KubeDeploymentReplicasMismatch", "namespace": "shop", "deployment": "web", "severity": "critical"}
    _post_alert(alertmanager, labels)
    incident = wait_for(lambda: Incident.objects.filter(alertname="KubeDeploymentReplicasMismatch").first(),
                        timeout=20, message="the firing alert's incident")
    assert incident.workload_key == "Deployment/shop/web" and incident.state == "open"

    _post_alert(alertmanager, labels, resolved=True)
    wait_for(lambda: Incident.objects.filter(pk=incident.pk, state="resolved").exists(), timeout=20,
             message="the resolved alert closing the incident")
    kinds = list(ClusterEvent.objects.filter(incident=incident).order_by("id").values_list("kind", flat=True))
    assert kinds == ["alert_fired", "alert_resolved", "resolved"]


def test_alertmanager_without_the_token_gets_401_and_nothing_is_stored(alertmanager, transactional_db) -> None:  # type: ignore[no-untyped-def]
    def refused() -> float:
        return REGISTRY.get_sample_value("aiops_alertmanager_rejected_total", {"reason": "unauthorized"}) or 0.0

    before = refused()
    _post_alert(alertmanager, {"alertname": "NoTokenAlert", "auth": "none", "namespace": "shop", "deployment": "api"})
    wait_for(lambda: refused() > before, timeout=20, message="the unauthenticated delivery")
    time.sleep(0.5)
    assert not Incident.objects.exists() and not ClusterEvent.objects.exists()
