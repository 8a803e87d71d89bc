"""Chat deliveries are routed to a queue of their own: wherever the agent runs a worker, the
`outbound` process that consumes that queue alone runs beside it (`make run`'s Procfile, the
image's roles, compose's worker container, the worker pod of every overlay), and Prometheus
scrapes it. A place that ran the worker without it would still deliver (every worker consumes
the queue too), but behind polls and playbook steps: this keeps them consistent."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy.manifests import OVERLAYS, find, render

OUTBOUND = "python -m aiops_site.outbound"


def _procfile(path: str) -> dict[str, str]:
    lines = (ROOT / path).read_text().splitlines()
    return {name.strip(): command.strip() for name, _, command in
            (line.partition(":") for line in lines if line.strip() and not line.startswith("#"))}


def test_make_run_starts_the_outbound_process_beside_the_worker() -> None:
    procfile = _procfile("Procfile")
    assert "worker" in procfile
    assert procfile["outbound"] == OUTBOUND


def test_the_image_has_an_outbound_role_and_compose_runs_it_in_the_worker_container() -> None:
    entrypoint = (ROOT / "deploy" / "docker" / "entrypoint.sh").read_text()
    role = re.search(r"^  outbound\)\n(.*?)\n    ;;", entrypoint, re.MULTILINE | re.DOTALL)
    assert role and f"exec {OUTBOUND}" in role[1]
    workers = _procfile("deploy/docker/Procfile.worker")
    assert set(workers) == {"mcp", "worker", "outbound"}
    assert workers["outbound"].endswith("entrypoint.sh outbound")
    # The worker's port serves the outbound process's metrics files: it must not bind one too.
    assert "AIOPS_OUTBOUND_METRICS_PORT=0" in workers["outbound"]
    script = (ROOT / "deploy" / "verify-image.sh").read_text()
    roles = re.search(r"^ROLES=\(([a-z -]+)\)$", script, re.MULTILINE)[1].split()  # type: ignore[index]
    assert "outbound" in roles and "start_outbound()" in script and "check_outbound()" in script


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_worker_pod_runs_the_outbound_container_with_its_own_metrics(overlay: str) -> None:
    spec = find(render(overlay), "Deployment", "aiops-worker")["spec"]["template"]["spec"]
    outbound = next(c for c in spec["containers"] if c["name"] == "outbound")
    assert outbound["args"] == ["outbound"]
    env = {e["name"]: e for e in outbound["env"]}
    port = outbound["ports"][0]
    assert port["name"] == "metrics-outbound"
    assert env["AIOPS_OUTBOUND_METRICS_PORT"]["value"] == str(port["containerPort"])
    # Not the worker's or the MCP sidecar's port, and a metrics directory of its own.
    taken = {p["containerPort"] for c in spec["containers"] if c is not outbound for p in c.get("ports", [])}
    assert port["containerPort"] not in taken
    mounts = {m["name"] for c in spec["containers"] if c is not outbound for m in c["volumeMounts"]}
    assert not {m["name"] for m in outbound["volumeMounts"]} & mounts
    # It delivers: the chat platforms' secrets, and no MCP token (it calls no tool).
    assert "TELEGRAM_BOT_TOKEN" in env and "AIOPS_MCP_TOKEN" not in env
    assert "outbound@" in " ".join(outbound["livenessProbe"]["exec"]["command"])


def test_prometheus_scrapes_the_outbound_port() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus-kubernetes.yml").read_text())
    regexes = [rule["regex"] for job in config["scrape_configs"] for rule in job.get("relabel_configs", [])
               if rule.get("source_labels") == ["__meta_kubernetes_pod_container_port_name"]]
    assert any(re.fullmatch(regex, "metrics-outbound") for regex in regexes)
