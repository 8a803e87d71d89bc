"""The compose worker container's role, run from the entrypoint as the image runs it
(`worker-with-mcp`): the Celery worker and the MCP server start side by side, the server answers
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

from tests.conftest import ROOT, wait_for, worker_env
from tests.deploy.test_metrics_scrape import _free_port, _get

pytestmark = [pytest.mark.integration]


def test_the_worker_container_runs_worker_and_mcp_and_stops_when_one_dies(  # type: ignore[no-untyped-def]
    transactional_db, sandbox_cluster, tmp_path: Path, monkeypatch
) -> None:
    from agents.registry import register_builtin
    from agents.services import call_tool

    token_file = tmp_path / "mcp_token"
    token_file.write_text("compose-mcp-token\n")
    metrics_port, mcp_port = _free_port(), _free_port()
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

    def logs() -> str:
        return (tmp_path / "container.log").read_text(errors="replace")[-4000:]

    try:
        def up() -> bool:
            assert container.poll() is None, logs()
            return _get(f"http://127.0.0.1:{metrics_port}/metrics")[0] == 200 and "mcp_server_listening" in logs()

        wait_for(up, timeout=90, interval=0.3, message="the worker's metrics port and the MCP server")

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
