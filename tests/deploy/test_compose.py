"""docker-compose.yml: Debian's docker-compose 1.29 accepts it, and it is production-shaped."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed (.ci/run installs it)")

LONG_RUNNING = {"postgres", "redis", "web", "worker", "beat", "flower", "prometheus", "alertmanager", "grafana"}


def _project(tmp_path: Path, env: str) -> Path:
    """The compose file with an .env, as a user's checkout has them (compose wants the env file)."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / ".env").write_text(env)
    return tmp_path


def _config(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COMPOSE), "-f", str(project / "docker-compose.yml"), "config"],
        cwd=project, capture_output=True, text=True, timeout=60,
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    filled = (ROOT / ".env.example").read_text().replace("CHANGE_ME", "s3cret-value")
    result = _config(_project(tmp_path_factory.mktemp("compose"), filled))
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_it_accepts_the_full_stack(rendered: dict[str, Any]) -> None:
    assert set(rendered["services"]) == LONG_RUNNING | {"migrate"}
    assert set(rendered["volumes"]) == {"pgdata", "redisdata", "prometheus-data", "alertmanager-data", "grafana-data"}


def test_it_publishes_ports_on_loopback_only(rendered: dict[str, Any]) -> None:
    published = {
        name: [str(port) for port in service.get("ports", [])] for name, service in rendered["services"].items()
    }
    assert {name for name, ports in published.items() if ports} == {"web", "flower", "prometheus", "alertmanager", "grafana"}
    for name, ports in published.items():
        assert all(port.startswith("127.0.0.1:") for port in ports), f"{name}: {ports}"
    assert "8765" not in str(published), "the MCP server holds write access: never published"


def test_every_long_running_service_has_a_healthcheck_and_a_restart_policy(rendered: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        service = rendered["services"][name]
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name
    assert rendered["services"]["migrate"]["restart"] == "no"
    for name in ("web", "worker", "beat", "flower"):
        assert rendered["services"][name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


def test_no_secret_is_written_in_the_compose_file() -> None:
    """Secrets come from .env (interpolated or env_file) or from files under secrets/."""
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    secretish = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$|_URL$")
    for name, service in raw["services"].items():
        environment = service.get("environment") or {}
        for key, value in environment.items():
            if secretish.search(key) and key not in ("AIOPS_MCP_URL",) and not key.endswith("_FILE"):
                assert "${" in str(value), f"{name}.{key} must come from .env, not be written inline"
    assert set(raw["secrets"]) == {"mcp_token", "alertmanager_token", "kubeconfig"}


def test_the_agent_runs_read_only_as_the_image_user(rendered: dict[str, Any]) -> None:
    for name in ("web", "worker", "beat", "flower", "migrate"):
        service = rendered["services"][name]
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"], name  # noqa: S108
        # `config` inlines the env_file: the key from .env reached every role.
        assert service["environment"]["AIOPS_SECRET_KEY"] == "s3cret-value", name


def test_the_mcp_server_runs_beside_the_worker_only(rendered: dict[str, Any]) -> None:
    worker = rendered["services"]["worker"]
    assert worker["command"] == ["worker-with-mcp"]
    assert worker["environment"]["AIOPS_MCP_URL"] == "http://127.0.0.1:8765/mcp"
    assert worker["environment"]["AIOPS_MCP_TOKEN_FILE"] == "/run/secrets/mcp_token"
    holders = {name for name, service in rendered["services"].items()
               if {"source": "mcp_token"} in service.get("secrets", [])}
    assert holders == {"worker"}
    procfile = (ROOT / "deploy" / "docker" / "Procfile.worker").read_text()
    assert "entrypoint.sh mcp" in procfile and "entrypoint.sh worker" in procfile


def test_alertmanager_posts_to_the_agent_with_the_shared_token(rendered: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for webhook in receiver["webhook_configs"]:
            assert webhook["url"] == "http://web:8000/api/webhooks/alertmanager"
            assert webhook["http_config"]["authorization"]["credentials_file"] == "/run/secrets/alertmanager_token"
    web = rendered["services"]["web"]
    assert web["environment"]["AIOPS_ALERTMANAGER_TOKEN_FILE"] == "/run/secrets/alertmanager_token"
    assert {"source": "alertmanager_token"} in rendered["services"]["alertmanager"]["secrets"]
    assert "monitoring" in web["networks"] and "monitoring" in rendered["services"]["alertmanager"]["networks"]


def test_it_refuses_to_start_without_the_passwords(tmp_path: Path) -> None:
    env = (ROOT / ".env.example").read_text().replace("CHANGE_ME", "x").replace("POSTGRES_PASSWORD=x", "POSTGRES_PASSWORD=")
    result = _config(_project(tmp_path, env))
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr


def test_our_services_are_the_image_and_roles_that_verify_image_runs(rendered: dict[str, Any]) -> None:
    """deploy/verify-image.sh builds this image and runs each of these roles for real (CI)."""
    script = (ROOT / "deploy" / "verify-image.sh").read_text()
    verified = set(re.search(r"^ROLES=\(([a-z -]+)\)$", script, re.MULTILINE)[1].split())  # type: ignore[index]
    assert verified == {"migrate", "web", "worker", "outbound", "beat", "watch", "flower", "mcp", "worker-with-mcp"}
    ours = {name: service for name, service in rendered["services"].items() if "build" in service}
    assert set(ours) == {"migrate", "web", "worker", "beat", "flower"}
    assert {service["image"] for service in ours.values()} == {"aiops-agent:local"}
    assert {name: service["command"][0] for name, service in ours.items()} == {
        "migrate": "migrate", "web": "web", "worker": "worker-with-mcp", "beat": "beat", "flower": "flower",
    }
    assert {service["command"][0] for service in ours.values()} <= verified
