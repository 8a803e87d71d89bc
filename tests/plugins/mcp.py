"""Shared test fixtures: mcp (loaded by tests/conftest.py).

- `fake_mcp`: a small third-party MCP server (tests/agents/fake_mcp_server.py, stdio, the
  official SDK) registered and synced like any admin-configured server; its tools are HIGH.
  `fake_calls(key)` counts how often `set_value` really ran for a key.
- `approvers`: users alice and bob in the approvers group, carol outside it.
- `kube_mcp`: our Kubernetes MCP server (`python -m k8s.mcp_server --http`) against the
  sandbox, started once per session; `.url`, `.token`, `.kubeconfig`.
- `kube_tools`: our server registered in the tool registry, pointing at `kube_mcp`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
FAKE_SERVER = ROOT / "tests" / "agents" / "fake_mcp_server.py"


@pytest.fixture(scope="session")
def fake_mcp_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One path for the session: the server's config (and so its open session) stays the same.
    path = tmp_path_factory.mktemp("fake-mcp") / "calls.log"
    path.touch()
    return path


@pytest.fixture
def fake_mcp(db: Any, fake_mcp_log: Path) -> Any:
    from agents.models import MCPServer
    from agents.registry import sync_server

    server = MCPServer.objects.create(
        name="fake", transport="stdio", command=sys.executable, args=[str(FAKE_SERVER)],
        env={"FAKE_MCP_LOG": str(fake_mcp_log)}, description="test server",
    )
    sync_server(server)
    return server


@pytest.fixture
def fake_calls(fake_mcp_log: Path) -> Callable[[str], int]:
    def count(key: str) -> int:
        return sum(1 for line in fake_mcp_log.read_text().splitlines() if line.split("=", 1)[0] == key)

    return count


@dataclass
class Approvers:
    alice: Any
    bob: Any
    carol: Any  # not an approver


@pytest.fixture
def approvers(db: Any, settings: Any) -> Approvers:
    from django.contrib.auth.models import Group, User

    group, _ = Group.objects.get_or_create(name=settings.AIOPS_APPROVER_GROUP)
    alice = User.objects.create_user("alice", password="x")
    bob = User.objects.create_user("bob", password="x")
    carol = User.objects.create_user("carol", password="x")
    alice.groups.add(group)
    bob.groups.add(group)
    return Approvers(alice, bob, carol)


@dataclass
class KubeMCP:
    url: str
    token: str
    kubeconfig: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def kube_mcp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeMCP]:
    sandbox = request.getfixturevalue("sandbox")
    workdir = tmp_path_factory.mktemp("kube-mcp")
    port_file, log_path = workdir / "port", workdir / "server.log"
    token = "test-token-" + os.urandom(8).hex()
    env = {**os.environ, "AIOPS_MCP_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "k8s.mcp_server", "--http", "--port", "0", "--port-file", str(port_file),
             "--kubeconfig", str(sandbox.kubeconfig)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"k8s.mcp_server did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    server = KubeMCP(f"http://127.0.0.1:{port_file.read_text().strip()}/mcp", token, str(sandbox.kubeconfig),
                     process, log_path)
    yield server
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def kube_tools(db: Any, kube_mcp: KubeMCP, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Our server in the registry, reached over HTTP with its bearer token (read from the
    environment at call time, as in production)."""
    from agents.registry import register_builtin

    monkeypatch.setenv("AIOPS_MCP_TOKEN", kube_mcp.token)
    return register_builtin(kube_mcp.url)
