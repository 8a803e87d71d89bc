"""Shared test fixtures: incidents (loaded by tests/conftest.py).

`signal_log` records `incident_opened` / `incident_resolved` as they are sent.
`fake_cluster_api` is a tiny Kubernetes API server on 127.0.0.1 (port 0) serving the six list
endpoints the poll reads, with real `limit`/`continue` pagination, so the real kubernetes
client runs against it; `fake_cluster` registers it as a `k8s.Cluster`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

LIST_PATHS = {
    "/api/v1/pods": ("pods", "PodList", "v1"),
    "/api/v1/nodes": ("nodes", "NodeList", "v1"),
    "/apis/apps/v1/deployments": ("deployments", "DeploymentList", "apps/v1"),
    "/apis/apps/v1/replicasets": ("replicasets", "ReplicaSetList", "apps/v1"),
    "/apis/autoscaling/v2/horizontalpodautoscalers": ("hpas", "HorizontalPodAutoscalerList", "autoscaling/v2"),
    "/apis/batch/v1/jobs": ("jobs", "JobList", "batch/v1"),
}


@dataclass
class FakeClusterApi:
    objects: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {k: [] for k, _, _ in LIST_PATHS.values()})
    down: bool = False  # answer 503 to everything (an unreachable API server behind a load balancer)
    requests: list[str] = field(default_factory=list)
    url: str = ""
    kubeconfig: str = ""

    def set(self, **kinds: list[dict[str, Any]]) -> None:
        for kind, items in kinds.items():
            self.objects[kind] = list(items)

    def clear(self) -> None:
        for kind in self.objects:
            self.objects[kind] = []


def _handler(api: FakeClusterApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parsed = urlparse(self.path)
            api.requests.append(parsed.path)
            if api.down:
                return self._send(503, {"kind": "Status", "status": "Failure", "code": 503, "message": "unavailable"})
            target = LIST_PATHS.get(parsed.path)
            if target is None:
                return self._send(404, {"kind": "Status", "status": "Failure", "code": 404, "reason": "NotFound"})
            kind, list_kind, version = target
            query = parse_qs(parsed.query)
            limit = int(query.get("limit", ["0"])[0] or 0)
            start = int(query.get("continue", ["0"])[0] or 0)
            items = api.objects[kind]
            page = items[start : start + limit] if limit else items[start:]
            metadata: dict[str, Any] = {"resourceVersion": "1"}
            if limit and start + limit < len(items):
                metadata["continue"] = str(start + limit)
            self._send(200, {"kind": list_kind, "apiVersion": version, "metadata": metadata, "items": page})

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def write_kubeconfig(path: Path, url: str) -> str:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "users": [{"name": "fake", "user": {"token": "fake-token"}}],
    }))
    return str(path)


@pytest.fixture(scope="session")
def fake_cluster_api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeClusterApi]:
    api = FakeClusterApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    api.kubeconfig = write_kubeconfig(tmp_path_factory.mktemp("fake-kube") / "config", api.url)
    yield api
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_cluster_api(fake_cluster_api_server: FakeClusterApi) -> Iterator[FakeClusterApi]:
    fake_cluster_api_server.clear()
    fake_cluster_api_server.down = False
    fake_cluster_api_server.requests.clear()
    yield fake_cluster_api_server
    fake_cluster_api_server.clear()
    fake_cluster_api_server.down = False


@pytest.fixture
def fake_cluster(fake_cluster_api: FakeClusterApi, db: None) -> Any:
    from k8s.models import Cluster

    return Cluster.objects.create(name="fake", kubeconfig_path=fake_cluster_api.kubeconfig, is_default=True)


@dataclass
class SignalLog:
    opened: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)


@pytest.fixture
def signal_log() -> Iterator[SignalLog]:
    from playbooks.signals import incident_opened, incident_resolved

    log = SignalLog()

    def on_opened(sender: Any, incident: Any, **kwargs: Any) -> None:
        log.opened.append(incident.pk)

    def on_resolved(sender: Any, incident: Any, **kwargs: Any) -> None:
        log.resolved.append(incident.pk)

    incident_opened.connect(on_opened, weak=False, dispatch_uid="tests.incidents.opened")
    incident_resolved.connect(on_resolved, weak=False, dispatch_uid="tests.incidents.resolved")
    yield log
    incident_opened.disconnect(dispatch_uid="tests.incidents.opened")
    incident_resolved.disconnect(dispatch_uid="tests.incidents.resolved")
