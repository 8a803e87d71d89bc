"""`make run` start-up step: where our Kubernetes MCP server listens, and the tool registry.

The `mcp` Procfile process serves streamable HTTP on a loopback port kept in the run
directory (`mcp_port`), so workers started by the same launcher find it through
AIOPS_MCP_URL. The registry is filled before the workers start (`manage.py mcp sync`):
our own tools from code, third-party servers from their list_tools (a failure there is
reported, not fatal).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from aiops_site.embedded import kept_port

BASE_DIR = Path(__file__).resolve().parent.parent


def mcp_port(run_dir: Path) -> int:
    """The port kept in the run directory (stable across restarts), or a new free one."""
    return kept_port(run_dir / "mcp_port")


def prepare(run_dir: Path, env: dict[str, str]) -> None:
    if not env.get("AIOPS_MCP_URL"):
        port = mcp_port(run_dir)
        env["AIOPS_MCP_PORT"] = str(port)
        env["AIOPS_MCP_URL"] = f"http://127.0.0.1:{port}/mcp"
    else:
        env.setdefault("AIOPS_MCP_PORT", "0")
    print(f"[aiops] Kubernetes MCP server at {env['AIOPS_MCP_URL']}", flush=True)
    subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), "mcp", "sync"], check=True, cwd=BASE_DIR,
                   env={**os.environ, **env})
