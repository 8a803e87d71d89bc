"""query_prometheus against a real Prometheus (the Debian package) scraping the app's own
metrics endpoint: instant and range queries, the bounds on what comes back, and its refusals."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import prometheus_client
import pytest

from k8s.mcp_server import prometheus as prom
from k8s.mcp_server.kube import ToolFailure
from k8s.mcp_server.server import ClusterResolver, ToolInputError, check_arguments, run_tool
from k8s.mcp_server.tools import TOOL_SPECS
from tests.conftest import ROOT, free_port, wait_for

pytestmark = [pytest.mark.integration]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SPEC = TOOL_SPECS["query_prometheus"]


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prometheus")
    app_port, port = free_port(), free_port()
    # This process's registry: the app's metrics, served as the worker's metrics port serves them.
    app_server, _ = prometheus_client.start_http_server(app_port, addr="127.0.0.1")
    config = tmp / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: app, static_configs: [{{targets: ['127.0.0.1:{app_port}']}}]}}]\n"
    )
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        def scraped() -> bool:
            assert process.poll() is None, Path(tmp / "prometheus.log").read_text()[-3000:]
            try:
                result = httpx.get(url + "/api/v1/query", params={"query": 'count_over_time(up{job="app"}[1m])'}, timeout=2)
            except httpx.HTTPError:
                return False
            samples = result.json().get("data", {}).get("result", []) if result.status_code == 200 else []
            return bool(samples) and float(samples[0]["value"][1]) >= 3

        wait_for(scraped, timeout=60, interval=0.5, message="Prometheus to scrape the app three times")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        app_server.shutdown()


def test_an_instant_query_returns_the_apps_series(prometheus_url: str) -> None:
    answer = prom.query_prometheus(prometheus_url, 'up{job="app"}')
    assert answer["result_type"] == "vector" and answer["series_total"] == 1
    (series,) = answer["series"]
    assert series["metric"]["job"] == "app" and series["value"][1] == "1"


def test_a_range_query_returns_the_memory_over_time(prometheus_url: str) -> None:
    answer = prom.query_prometheus(prometheus_url, 'process_resident_memory_bytes{job="app"}', range="2m", step="1s")
    assert answer["result_type"] == "matrix" and answer["range"]["step_s"] == 1
    values = answer["series"][0]["values"]
    assert len(values) >= 3 and all(float(v) > 1_000_000 for _, v in values)
    assert values == sorted(values)  # oldest first, as Prometheus gives them


def test_the_result_is_bounded_in_points_and_series(prometheus_url: str) -> None:
    thinned = prom.query_prometheus(prometheus_url, "vector(1)", range="10m", step="1s")
    (series,) = thinned["series"]
    assert len(series["values"]) == prom.MAX_POINTS and series["points"] == 601
    assert series["values"][-1][0] == pytest.approx(thinned["range"]["end"], abs=1)  # the newest point is kept

    wide = prom.query_prometheus(prometheus_url, '{job="app"}')
    assert wide["series_total"] > prom.MAX_SERIES and len(wide["series"]) == prom.MAX_SERIES
    assert "more series left out" in wide["note"]


def test_refusals_name_the_reason(prometheus_url: str) -> None:
    with pytest.raises(ToolFailure, match="Prometheus refused the query: .*parse error"):
        prom.query_prometheus(prometheus_url, "rate(up[")
    with pytest.raises(ToolFailure, match="too fine"):
        prom.query_prometheus(prometheus_url, "up", range="7d", step="1s")
    with pytest.raises(ToolFailure, match=r"could not be reached"):
        prom.query_prometheus(f"http://127.0.0.1:{free_port()}", "up", timeout=3)
    with pytest.raises(ToolInputError, match="range"):
        check_arguments(SPEC, {"query": "up", "range": "1 hour"})


def test_the_tool_reads_the_clusters_prometheus_url(prometheus_url: str, transactional_db) -> None:  # type: ignore[no-untyped-def]
    from k8s.models import Cluster

    resolver = ClusterResolver(kubeconfig=None, context=None, use_django=True)
    Cluster.objects.create(name="metrics", kubeconfig_path="/dev/null", is_default=False, prometheus_url=prometheus_url)
    Cluster.objects.create(name="dark", kubeconfig_path="/dev/null")
    answer = run_tool(resolver, SPEC, check_arguments(SPEC, {"query": 'up{job="app"}', "cluster": "metrics"}), 10)
    assert answer["series"][0]["value"][1] == "1"
    with pytest.raises(ToolFailure, match="no Prometheus is configured"):
        run_tool(resolver, SPEC, {"query": "up", "cluster": "dark"}, 10)
    assert SPEC.risk == "LOW" and SPEC.rbac == ()  # it reads Prometheus, not the Kubernetes API
