"""The compose worker container's role, run from the entrypoint as the image runs it
(`worker-with-mcp`): the Celery worker, the outbound (deliveries) process and the MCP server start side by side, the server answers
on loopback with the token from its secret file, the worker's metrics port serves the MCP
server's metrics too (one multiprocess directory), and when one process dies the container
exits, so the restart policy brings both back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, free_port, wait_for, worker_env
from tests.deploy.test_metrics_scrape import _get

pytestmark = [pytest.mark.integration]


def test_the_worker_container_runs_worker_and_mcp_and_stops_when_one_dies(  # type: ignore[no-untyped-def]
    transactional_db, sandbox_cluster, tmp_path: Path, monkeypatch
) -> None:
    from agents.registry import register_builtin
    from agents.services import call_tool

    token_file = tmp_path / "mcp_token"
    token_file.write_text("compose-mcp-token\n")
    metrics_port, mcp_port = free_port(), free_port()
    env = worker_env({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "AIOPS_WORKER_METRICS_PORT": str(metrics_port), "AIOPS_METRICS_ADDRESS": "127.0.0.1",
        "AIOPS_MCP_PORT": str(mcp_port), "AIOPS_MCP_TOKEN_FILE": str(token_file),
        "AIOPS_CELERY_QUEUE": f"deploy-container-{uuid.uuid4().hex[:8]}", "AIOPS_WORKER_CONCURRENCY": "1",
    })
    env.pop("AIOPS_MCP_TOKEN", None)  # only the file, as compose mounts it
    log = open(tmp_path / "container.log", "wb")
    container = subprocess.Popen(["sh", "deploy/docker/entrypoint.sh", "worker-with-mcp"], cwd=ROOT, env=env,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def logs(tail: int = 4000) -> str:
        return (tmp_path / "container.log").read_text(errors="replace")[-tail:]

    try:
        def up() -> bool:
            assert container.poll() is None, logs()
            whole = logs(tail=0)  # three processes write here: the marker may be far from the end
            return (_get(f"http://127.0.0.1:{metrics_port}/metrics")[0] == 200 and "mcp_server_listening" in whole
                    and "outbound@" in whole)

        wait_for(up, timeout=90, interval=0.3, message="the worker's metrics port, the MCP server and the outbound process")

        # The worker's client reaches the server on loopback with the token read from the file.
        register_builtin(f"http://127.0.0.1:{mcp_port}/mcp")
        monkeypatch.setenv("AIOPS_MCP_TOKEN", "compose-mcp-token")
        result = call_tool("list_namespaces", {}, actor="deploy-test", reason="the compose worker container")
        assert result.ok, result.output
        assert "payments" in result.output

        def mcp_metrics_on_the_worker_port() -> bool:
            page = _get(f"http://127.0.0.1:{metrics_port}/metrics")[1].decode()
            return 'aiops_mcp_server_calls_total{outcome="ok",tool="list_namespaces"} 1.0' in page

        wait_for(mcp_metrics_on_the_worker_port, timeout=10, message="the MCP server's metrics on the worker port")

        # One process dies: honcho stops the other and the container exits non-zero.
        mcp = next(p for p in psutil.Process(container.pid).children(recursive=True)
                   if "k8s.mcp_server" in " ".join(p.cmdline()))
        mcp.kill()
        started = time.monotonic()
        assert container.wait(60) != 0, logs()
        assert time.monotonic() - started < 60
        leftovers = [p for p in psutil.process_iter(["cmdline"])
                     if f"--port {mcp_port}" in " ".join(p.info["cmdline"] or [])]
        assert leftovers == []
    finally:
        if container.poll() is None:
            os.killpg(container.pid, signal.SIGTERM)
            try:
                container.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(container.pid, signal.SIGKILL)
                container.wait()
        log.close()


def _call_tool(url: str, token: str, tool: str) -> bool:
    """Call a tool as a client would; returns the result's is_error."""
    import anyio
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    async def call() -> bool:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with http, Client(streamable_http_client(url, http_client=http)) as client:
            result = await client.call_tool(tool, {})
            return bool(result.is_error)

    return anyio.run(call)


@pytest.mark.django_db(transaction=True)
def test_the_kubernetes_mcp_sidecar_serves_its_own_metrics_port(tmp_path: Path) -> None:
    """The sidecar is a container of its own: `mcp` with AIOPS_MCP_METRICS_PORT set."""
    import urllib.error
    import urllib.request

    metrics_port, mcp_port = free_port(), free_port()
    env = worker_env({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"), "AIOPS_METRICS_ADDRESS": "127.0.0.1",
        "AIOPS_MCP_METRICS_PORT": str(metrics_port), "AIOPS_MCP_PORT": str(mcp_port), "AIOPS_MCP_TOKEN": "sidecar",
    })
    log = open(tmp_path / "sidecar.log", "wb")
    sidecar = subprocess.Popen(["sh", "deploy/docker/entrypoint.sh", "mcp", "--read-only"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        def listening() -> bool:
            assert sidecar.poll() is None, (tmp_path / "sidecar.log").read_text()
            return "mcp_server_listening" in (tmp_path / "sidecar.log").read_text(errors="replace")

        wait_for(listening, timeout=60, interval=0.3, message="the MCP sidecar")
        # A tool call through the MCP SDK with the token: no cluster is registered, so it fails,
        # which is still a call the server counts.
        assert _call_tool(f"http://127.0.0.1:{mcp_port}/mcp", "sidecar", "list_namespaces") is True
        status, page = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert b'aiops_mcp_server_calls_total{outcome="error",tool="list_namespaces"} 1.0' in page, page[-2000:]
        # A failed call is timed too: the latency histogram counts every answered call.
        assert b'aiops_mcp_server_call_duration_seconds_count{tool="list_namespaces"} 1.0' in page, page[-2000:]
        assert '"read_only": true' in (tmp_path / "sidecar.log").read_text().replace('"read_only":true', '"read_only": true')
        request = urllib.request.Request(f"http://127.0.0.1:{mcp_port}/mcp", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)  # noqa: S310  (loopback)
        assert refused.value.code == 401  # no token, no tools
    finally:
        sidecar.terminate()
        sidecar.wait(20)
        log.close()
