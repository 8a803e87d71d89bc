"""Metrics as Prometheus sees them: a real Prometheus scrapes gunicorn (2 workers) and a Celery
worker through the metrics ports the containers use, and the test reads the values back
through Prometheus's HTTP API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, free_port, wait_for, worker_env

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"



def _get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310  (loopback test servers)
            return response.status, response.read()
    except OSError:
        return 0, b""


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
        return True

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    status, body = _get(f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    if status != 200:
        return []
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def _value(prometheus_url: str, promql: str) -> float | None:
    result = _query(prometheus_url, promql)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture
def stack(transactional_db, tmp_path: Path) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """gunicorn (web role) + a Celery worker, each with its metrics port, and Prometheus scraping both."""
    ports = {name: free_port() for name in ("web", "web_metrics", "worker_metrics", "prometheus")}
    idle_queue = f"deploy-idle-{uuid.uuid4().hex[:8]}"  # nobody consumes it: its depth must show
    busy_queue = f"deploy-busy-{uuid.uuid4().hex[:8]}"  # our worker alone consumes it
    (tmp_path / "web-metrics").mkdir()
    (tmp_path / "worker-metrics").mkdir()
    common = {"AIOPS_METRICS_ADDRESS": "127.0.0.1"}
    web_env = worker_env({**common, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "web-metrics"),
                          "AIOPS_WEB_METRICS_PORT": str(ports["web_metrics"]), "AIOPS_METRICS_QUEUES": idle_queue})
    worker_process_env = worker_env({**common, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "worker-metrics"),
                                     "AIOPS_WORKER_METRICS_PORT": str(ports["worker_metrics"])})
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: aiops-web\n    static_configs: [{{targets: ['127.0.0.1:{ports['web_metrics']}']}}]\n"
        f"  - job_name: aiops-worker\n    static_configs: [{{targets: ['127.0.0.1:{ports['worker_metrics']}']}}]\n"
    )
    processes = [
        Process("gunicorn", [sys.executable, "-m", "gunicorn", "aiops_site.wsgi", "--config",
                             str(ROOT / "deploy/docker/gunicorn.conf.py"), "--bind", f"127.0.0.1:{ports['web']}",
                             "--workers", "2", "--graceful-timeout", "3"], web_env, tmp_path),
        Process("worker", [sys.executable, "-m", "celery", "-A", "aiops_site", "worker", "--loglevel", "INFO",
                           "--concurrency", "1", "-Q", busy_queue, "--hostname", f"deploy-{uuid.uuid4().hex[:6]}@%h",
                           "--without-heartbeat", "--without-mingle", "--without-gossip",
                           "--include", "tests.support_tasks"], worker_process_env, tmp_path),
        Process("prometheus", [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{ports['prometheus']}"], dict(os.environ), tmp_path),
    ]
    urls = {
        "web": f"http://127.0.0.1:{ports['web']}",
        "web_metrics": f"http://127.0.0.1:{ports['web_metrics']}/metrics",
        "worker_metrics": f"http://127.0.0.1:{ports['worker_metrics']}/metrics",
        "prometheus": f"http://127.0.0.1:{ports['prometheus']}",
    }
    try:
        for name, url in (("web", urls["web"] + "/health"), ("web_metrics", urls["web_metrics"]),
                          ("worker_metrics", urls["worker_metrics"]), ("prometheus", urls["prometheus"] + "/-/ready")):
            wait_for(lambda url=url: all(p.alive() for p in processes) and _get(url)[0] == 200, timeout=60,
                     interval=0.2, message=f"{name} at {url}")
        yield {"urls": urls, "idle_queue": idle_queue, "busy_queue": busy_queue, "processes": processes}
    finally:
        for process in processes:  # all at once: each shuts down gracefully, in parallel
            process.terminate()
        for process in processes:
            process.stop()
        import redis
        from django.conf import settings

        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(idle_queue, busy_queue)


@pytest.mark.integration
@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus (Debian package) is not installed")
def test_prometheus_reads_back_counters_gauges_and_queue_depth_from_web_and_worker(stack: dict[str, Any]) -> None:
    from aiops_site.celery import app
    from k8s.models import Cluster

    urls = stack["urls"]
    Cluster.objects.create(name="deploy-prom", kubeconfig_path="/nonexistent/kubeconfig", consecutive_failures=4)
    for _ in range(6):  # spread over both gunicorn workers; the master's port must sum them
        assert _get(urls["web"] + "/ready")[0] == 200
    for _ in range(3):
        app.send_task("tests.log_and_chain", args=[0], queue=stack["idle_queue"])
    results = [app.send_task("tests.log_and_chain", args=[0], queue=stack["busy_queue"]) for _ in range(2)]
    assert [result.get(timeout=30) for result in results] == ["ok", "ok"]

    prometheus = urls["prometheus"]
    expectations = {
        'sum(django_http_requests_total_by_view_transport_method_total{job="aiops-web",view="ready"})': 6,
        f'aiops_celery_queue_length{{job="aiops-web",queue="{stack["idle_queue"]}"}}': 3,
        'sum(aiops_celery_tasks_total{job="aiops-worker",task="tests.log_and_chain",outcome="success"})': 2,
        'aiops_cluster_poll_consecutive_failures{job="aiops-web",cluster="deploy-prom"}': 4,
        'aiops_database_up{job="aiops-web"}': 1,
        'aiops_celery_broker_up{job="aiops-web"}': 1,
        'sum(aiops_celery_task_duration_seconds_count{job="aiops-worker",task="tests.log_and_chain"})': 2,
    }

    def all_seen() -> bool:
        return all(_value(prometheus, promql) == expected for promql, expected in expectations.items())

    try:
        wait_for(all_seen, timeout=30, interval=0.5, message="Prometheus to scrape the moved metrics")
    except BaseException:
        seen = {promql: _value(prometheus, promql) for promql in expectations}
        logs = "\n".join(f"--- {p.name}\n{p.log()}" for p in stack["processes"])
        raise AssertionError(f"values Prometheus holds: {seen}\n{logs}") from None
    # Django's own /metrics (what `make run` serves) sums the same multiprocess files.
    django_page = _samples(_get(urls["web"] + "/metrics")[1].decode())
    ready = [value for (name, labels), value in django_page.items()
             if name == "django_http_requests_total_by_view_transport_method_total" and ("view", "ready") in labels]
    assert sum(ready) == 6
    assert django_page[("aiops_celery_queue_length", (("queue", stack["idle_queue"]),))] == 3
    # Both targets are healthy in Prometheus's own view.
    assert {r["metric"]["job"]: r["value"][1] for r in _query(prometheus, "up")} == {"aiops-web": "1", "aiops-worker": "1"}
    # The worker's port serves task metrics only; queue depth and state gauges have one source (web).
    worker_page = _get(urls["worker_metrics"])[1].decode()
    assert "aiops_celery_tasks_total" in worker_page and "aiops_celery_queue_length" not in worker_page


def _samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


@pytest.mark.django_db
def test_django_metrics_serve_state_gauges_and_queue_depth(client, make_incident) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from channels.models import OutboundMessage
    from k8s.models import Cluster

    succeeded = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    Cluster.objects.create(name="metrics-view", kubeconfig_path="/nonexistent/kubeconfig", consecutive_failures=2,
                           last_success_at=succeeded)
    Cluster.objects.create(name="switched-off", kubeconfig_path="/nonexistent/kubeconfig", enabled=False)
    make_incident(workload_name="web", primary_type="crash_loop")
    make_incident(workload_name="api", primary_type="crash_loop")
    make_incident(workload_name="batch", primary_type="oom_killed", state="resolved", resolved_at=succeeded)
    OutboundMessage.objects.create(kind="slack", address="C1", text="waiting")
    response = client.get("/metrics")
    assert response.status_code == 200
    body = response.content.decode()
    samples = _samples(body)
    assert samples[("aiops_cluster_poll_consecutive_failures", (("cluster", "metrics-view"),))] == 2
    assert samples[("aiops_cluster_last_poll_success_timestamp_seconds", (("cluster", "metrics-view"),))] == (
        succeeded.timestamp())
    assert "switched-off" not in body
    assert samples[("aiops_incidents_open", (("type", "crash_loop"),))] == 2
    assert ("aiops_incidents_open", (("type", "oom_killed"),)) not in samples  # resolved
    assert samples[("aiops_chat_outbox_messages", (("platform", "slack"), ("state", "queued")))] == 1
    assert samples[("aiops_database_up", ())] == 1 and samples[("aiops_celery_broker_up", ())] == 1
    assert samples[("aiops_approvals_pending", ())] == 0
    # django-prometheus's own metrics are still there.
    assert "django_http_requests_total_by_view_transport_method_total" in body


@pytest.mark.django_db
def test_a_scrape_still_answers_when_the_broker_is_down(client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from aiops_site.celery import app

    monkeypatch.setitem(app.conf, "broker_read_url", f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    response = client.get("/metrics")
    assert response.status_code == 200
    body = response.content.decode()
    assert "aiops_celery_broker_up 0.0" in body
    assert "aiops_celery_queue_length{" not in body
    assert "aiops_database_up 1.0" in body
    assert time.monotonic() - started < 10
