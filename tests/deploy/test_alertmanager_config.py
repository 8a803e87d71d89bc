"""The Alertmanager configuration the compose stack ships, run by a real Alertmanager against
the agent: the bearer token read from the shared secret file is accepted, cluster alerts open
incidents, and the agent's alerts about itself take the operators' route."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, free_port, wait_for

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
TOKEN = "shared-secret-file-token"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(ALERTMANAGER is None, reason="prometheus-alertmanager is not installed (.ci/run installs it)"),
]



@pytest.fixture
def shipped_alertmanager(live_server, settings, tmp_path: Path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """deploy/alertmanager/alertmanager.yml as shipped, but for three things a test must change:
    the agent's address (web:8000 is compose's), the secret file's path, and the waits."""
    settings.AIOPS_ALERTMANAGER_TOKEN = TOKEN
    (tmp_path / "alertmanager_token").write_text(TOKEN + "\n")  # as `secrets/alertmanager_token` holds it
    shipped = (ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text()
    assert shipped.count("http://web:8000/") == 2 and shipped.count("/run/secrets/alertmanager_token") == 2
    config = yaml.safe_load(
        shipped.replace("http://web:8000/", f"{live_server.url}/")
        .replace("/run/secrets/alertmanager_token", str(tmp_path / "alertmanager_token"))
    )
    for route in (config["route"], *config["route"]["routes"]):
        route.update({"group_wait": "1s", "group_interval": "1s"})
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp_path / "alertmanager.log", "wb")
    process = subprocess.Popen(
        [str(ALERTMANAGER), f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
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
        wait_for(ready, timeout=20, message=f"alertmanager ready:\n{(tmp_path / 'alertmanager.log').read_text()}")
        yield base
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _post(base: str, labels: dict[str, str]) -> None:
    alert = {"labels": labels, "annotations": {"summary": labels["alertname"]},
             "startsAt": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}
    request = urllib.request.Request(f"{base}/api/v2/alerts", data=json.dumps([alert]).encode(),  # noqa: S310
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
        assert response.status == 200


def _receiver_of(base: str, alertname: str) -> str | None:
    with urllib.request.urlopen(f"{base}/api/v2/alerts?filter=alertname%3D%22{alertname}%22", timeout=5) as r:  # noqa: S310
        alerts = json.loads(r.read())
    return alerts[0]["receivers"][0]["name"] if alerts else None


def test_the_shipped_config_delivers_cluster_and_self_alerts_with_the_shared_token(
    shipped_alertmanager: str, transactional_db  # type: ignore[no-untyped-def]
) -> None:
    from playbooks.models import Incident

    _post(shipped_alertmanager, {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "web-5d9c7-abcde",
                                 "deployment": "web", "severity": "critical"})
    _post(shipped_alertmanager, {"alertname": "AIOpsChatDeliveryFailing", "service": "aiops-agent",
                                 "platform": "slack", "severity": "warning"})
    assert _receiver_of(shipped_alertmanager, "KubePodCrashLooping") == "aiops-agent"
    assert _receiver_of(shipped_alertmanager, "AIOpsChatDeliveryFailing") == "operators"
    cluster = wait_for(lambda: Incident.objects.filter(alertname="KubePodCrashLooping").first(), timeout=20,
                       message="the cluster alert's incident (the token was accepted)")
    assert cluster.state == "open" and cluster.namespace == "shop"
    wait_for(lambda: Incident.objects.filter(alertname="AIOpsChatDeliveryFailing").exists(), timeout=20,
             message="the self alert, delivered through the operators' receiver")
