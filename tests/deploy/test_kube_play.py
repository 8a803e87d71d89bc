"""The rendered default overlay runs: `podman kube play` of the manifests as `kubectl kustomize`
renders them, through deploy/podman/kube_play.py's transform for what podman and one host lack.
The migrate Job's pod first (it exits 0 and registers the cluster), then the web and worker
Deployments: web answers `/ready` as uid 10001 on a read-only root, the worker answers a Celery
ping, its MCP sidecar answers (401 without the token).

It needs podman, the image (deploy/verify-image.sh builds it, cached) and the host's PostgreSQL
(127.0.0.1:5432) and Redis (6379), like deploy/verify-image.sh; it gets a database and a Redis
database of its own. Without them it is skipped, except where AIOPS_REQUIRE_CONTAINER_TESTS=1
(.ci/run sets it): there a missing piece fails it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.podman import kube_play
from deploy.podman import verify as helpers
from tests.conftest import ROOT, free_port, wait_for
from tests.deploy.manifests import kubectl_problem, render

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

PG_URL = os.environ.get("AIOPS_VERIFY_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_ADDR = os.environ.get("AIOPS_VERIFY_REDIS", "127.0.0.1:6379")
OVERLAY_IMAGE = "localhost/aiops-agent:local"  # what the default overlay names (aiops-agent:local)
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(ROOT / "deploy/podman/containers.conf"))}


def _reachable(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    try:
        socket.create_connection((host, int(port)), 3).close()
    except OSError:
        return False
    return True


def _missing() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (deploy/verify-image.sh or .ci/run installs it)"
    if problem := kubectl_problem():
        return problem
    pg_host = PG_URL.split("@")[-1].split("/")[0]
    if not _reachable(pg_host if ":" in pg_host else f"{pg_host}:5432"):
        return f"no PostgreSQL at {pg_host} (AIOPS_VERIFY_PG_URL)"
    if not _reachable(REDIS_ADDR):
        return f"no Redis at {REDIS_ADDR} (AIOPS_VERIFY_REDIS)"
    return None


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=PODMAN_ENV)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def image() -> str:
    if reason := _missing():
        if os.environ.get("AIOPS_REQUIRE_CONTAINER_TESTS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    # Cached: seconds when deploy/verify-image.sh built it already (.ci/run runs it first).
    build = subprocess.run(["bash", str(ROOT / "deploy/verify-image.sh"), "build"], capture_output=True, text=True,
                           timeout=1100, env=PODMAN_ENV)
    assert build.returncode == 0, build.stderr[-4000:]
    built = build.stdout.strip().splitlines()[-1]
    podman("tag", built, OVERLAY_IMAGE)
    return OVERLAY_IMAGE


@pytest.fixture
def stores() -> Iterator[tuple[str, str, str]]:
    """A database of the test's own on the host's PostgreSQL, owned by the manifests' owner role,
    with the app role the ConfigMap names (AIOPS_DB_APP_ROLE: aiops_app), and a Redis database of
    its own; removed after (the roles too, when this test created them)."""
    name = f"aiops_kube_play_{uuid.uuid4().hex[:10]}"
    owner_url, app_url, created = helpers.db_create(PG_URL, name, "aiops_owner", "aiops_app")
    redis_db = helpers.redis_pick(REDIS_ADDR)
    try:
        yield owner_url, app_url, f"redis://{REDIS_ADDR}/{redis_db}"
    finally:
        helpers.redis_flush(REDIS_ADDR, redis_db)
        helpers.db_drop(PG_URL, name, created)


def _container(deployment: str, name: str) -> dict[str, Any] | None:
    """A played Deployment's container (podman names it DEPLOYMENT-pod[-N]-NAME), or None."""
    listed = json.loads(podman("ps", "-a", "--format", "json").stdout or "[]")
    for container in listed:
        full = container["Names"][0]
        if full.startswith(f"{deployment}-pod") and full.endswith(f"-{name}"):
            return container
    return None


def _name(deployment: str, name: str) -> str:
    container = wait_for(lambda: _container(deployment, name), timeout=60, interval=1,
                         message=f"the {name} container of {deployment}")
    return str(container["Names"][0])


def test_the_default_overlay_runs_under_podman_kube_play(image: str, stores: tuple[str, str, str],
                                                         tmp_path: Path) -> None:
    owner_url, database_url, redis_url = stores
    rendered = render("default")
    # The overlay runs the image it names, unchanged by the transform.
    names = {c["image"] for obj in rendered if obj["kind"] in ("Deployment", "Job")
             for c in [*obj["spec"]["template"]["spec"].get("initContainers", []), *obj["spec"]["template"]["spec"]["containers"]]}
    assert names == {"aiops-agent:local"}

    ports = {key: free_port() for key in ("web", "web_metrics", "worker_metrics", "mcp", "mcp_metrics")}
    mcp_token = "kube-play-" + uuid.uuid4().hex
    secret_values = {
        "AIOPS_SECRET_KEY": "kube-play-" + uuid.uuid4().hex * 2,
        "DATABASE_URL": database_url,
        "AIOPS_MIGRATE_DATABASE_URL": owner_url,
        "REDIS_URL": redis_url,
        "AIOPS_MCP_TOKEN": mcp_token,
        "FLOWER_BASIC_AUTH": "flower:kube-play",
    }
    objects = kube_play.transform(rendered, ports)
    config = [obj for obj in objects if obj["kind"] == "ConfigMap"]
    migrate = [obj for obj in objects if obj["kind"] == "Pod"]
    deployments = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "Deployment"}
    assert [obj["metadata"]["name"] for obj in migrate] == ["aiops-migrate"]
    assert set(deployments) == {"aiops-web", "aiops-worker", "aiops-beat", "aiops-watch", "aiops-flower"}
    # What was not transformed is the manifests' own: the security context, env, args, volumes.
    web_spec = deployments["aiops-web"]["spec"]["template"]["spec"]
    original_web = next(o for o in rendered if o["metadata"]["name"] == "aiops-web" and o["kind"] == "Deployment")
    assert web_spec["securityContext"] == original_web["spec"]["template"]["spec"]["securityContext"]
    assert web_spec["initContainers"][0]["args"] == ["python", "manage.py", "migrate", "--check"]

    first = tmp_path / "migrate.yaml"
    first.write_text(kube_play.dump([*config, *migrate]))
    second = tmp_path / "web-worker.yaml"
    second.write_text(kube_play.dump([*config, deployments["aiops-web"], deployments["aiops-worker"]]))
    played: list[Path] = []
    podman("secret", "rm", "aiops-secrets", check=False)  # a crashed run's
    secret = subprocess.run(["podman", "secret", "create", "aiops-secrets", "-"], input=kube_play.secret_data(secret_values),
                            capture_output=True, text=True, timeout=60, env=PODMAN_ENV)
    assert secret.returncode == 0, secret.stderr
    try:
        # 1. The migrations Job's pod runs to completion (migrate, the tool registry, the cluster).
        played.append(first)
        podman("kube", "play", "--replace", "--network", "host", str(first), timeout=180)
        exit_code = podman("wait", "aiops-migrate-migrate", timeout=300).stdout.strip()
        migrate_log = podman("logs", "aiops-migrate-migrate").stdout + podman("logs", "aiops-migrate-migrate").stderr
        assert exit_code == "0", migrate_log[-3000:]
        assert "registered cluster 'local' (in-cluster credentials) as the default" in migrate_log

        # 2. Web and worker: their wait-for-migrations init containers pass, then they serve.
        played.append(second)
        podman("kube", "play", "--replace", "--network", "host", str(second), timeout=180)
        web_url = f"http://127.0.0.1:{ports['web']}"
        web, worker = _name("aiops-web", "web"), _name("aiops-worker", "worker")

        def web_logs() -> str:
            logs = podman("logs", web, check=False)
            return (logs.stdout + logs.stderr)[-3000:]

        def ready() -> bool:
            state = (_container("aiops-web", "web") or {}).get("State")
            assert state in ("created", "running", "initialized", "configured"), f"web is {state}: {web_logs()}"
            try:
                return helpers.http_status(web_url + "/ready") == 200
            except OSError:
                return False

        wait_for(ready, timeout=180, interval=1, message="/ready of the web pod")
        assert helpers.http_status(web_url + "/health") == 200
        # The manifests' securityContext holds under podman: uid 10001, a read-only root.
        assert podman("exec", web, "id", "-u").stdout.strip() == "10001"
        assert podman("exec", web, "touch", "/app/x", check=False).returncode != 0

        def pong() -> bool:
            result = podman("exec", worker, "sh", "-c",
                            'celery -A aiops_site inspect ping --timeout 10 -d "worker@$(hostname)"', check=False)
            return "pong" in result.stdout

        wait_for(pong, timeout=180, interval=2, message="the worker pod's Celery ping")
        wait_for(lambda: helpers.http_status(f"http://127.0.0.1:{ports['mcp']}/mcp", method="POST") == 401,
                 timeout=60, interval=1, message="the worker pod's MCP sidecar")
        # The sidecar's own metrics port (AIOPS_MCP_METRICS_PORT from the manifest, moved).
        assert helpers.http_status(f"http://127.0.0.1:{ports['mcp_metrics']}/metrics") == 200
    finally:
        for path in reversed(played):
            podman("kube", "down", str(path), timeout=120, check=False)
        podman("secret", "rm", "aiops-secrets", check=False)
        # A pod left behind by a failed play is removed too.
        for pod in json.loads(podman("pod", "ps", "--format", "json", check=False).stdout or "[]"):
            if pod["Name"].startswith(("aiops-migrate", "aiops-web-pod", "aiops-worker-pod")):
                podman("pod", "rm", "-f", "-t", "5", pod["Name"], check=False)


def test_the_transform_changes_only_what_podman_lacks() -> None:
    """Without podman: the transform keeps every container's image, args, env names, security
    context and volumes, and changes only ports, probes, replicas, kinds and the network."""
    if problem := kubectl_problem():
        pytest.skip(problem)
    rendered = render("default")
    ports = {"web": 18000, "web_metrics": 19100, "worker_metrics": 19101, "mcp": 18765, "mcp_metrics": 19102}
    objects = kube_play.transform(rendered, ports)
    assert [o["kind"] for o in objects][:2] == ["ConfigMap", "Pod"]
    assert {o["kind"] for o in objects} == {"ConfigMap", "Pod", "Deployment"}
    assert json.loads(kube_play.secret_data({"K": "v", "URL": "postgres://a:b@h/d"})) == {
        "K": "dg==", "URL": "cG9zdGdyZXM6Ly9hOmJAaC9k"}
    for obj in objects:
        if obj["kind"] not in ("Pod", "Deployment"):
            continue
        spec = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
        source = next(o for o in rendered if o["metadata"]["name"] == obj["metadata"]["name"]
                      and o["kind"] in ("Deployment", "Job"))["spec"]["template"]["spec"]
        assert spec["hostNetwork"] is True
        if spec.get("initContainers"):
            assert obj["metadata"]["annotations"][kube_play.INIT_TYPE] == "always"
        assert spec["securityContext"] == source["securityContext"]
        assert spec["volumes"] == source["volumes"]
        for new, old in zip([*spec.get("initContainers", []), *spec["containers"]],
                            [*source.get("initContainers", []), *source["containers"]], strict=True):
            assert new["image"] == old["image"] and new["args"] == old["args"]
            assert new["securityContext"] == old["securityContext"] and new["volumeMounts"] == old["volumeMounts"]
            assert new.get("envFrom") == old.get("envFrom")
            assert "ports" not in new and not any(probe in new for probe in kube_play.PROBES)
            assert {e["name"] for e in old.get("env", [])} <= {e["name"] for e in new.get("env", [])}
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    assert config["data"]["AIOPS_MCP_URL"] == "http://127.0.0.1:18765/mcp"
    worker = next(o for o in objects if o["metadata"]["name"] == "aiops-worker")["spec"]["template"]["spec"]
    mcp = next(c for c in worker["containers"] if c["name"] == "mcp")
    assert {"name": "AIOPS_MCP_PORT", "value": "18765"} in mcp["env"]
    assert list(yaml.safe_load_all(kube_play.dump(objects))) == objects  # plain YAML, as podman reads it
