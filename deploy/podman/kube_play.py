"""The rendered Kubernetes manifests, made playable by `podman kube play` (podman 4.3) on one host.

    kubectl kustomize deploy/k8s/overlays/default > rendered.yaml
    python deploy/podman/kube_play.py secret secrets.env | podman secret create aiops-secrets -
    python deploy/podman/kube_play.py play rendered.yaml --ports ports.env --part migrate > migrate.yaml
    python deploy/podman/kube_play.py play rendered.yaml --ports ports.env --part apps > apps.yaml
    podman kube play --network host migrate.yaml && podman wait aiops-migrate-migrate   # exit code 0
    podman kube play --network host apps.yaml

The manifests themselves are never edited for podman. The transform changes only what podman or
one host lacks, and nothing else:

- `podman kube play` runs Pods and Deployments (with the ConfigMaps beside them): the migrate
  Job becomes the Pod of its template (restartPolicy Never, as in the Job); Services, the
  Namespace, service accounts, RBAC and PodDisruptionBudgets, which podman has no use for, are
  left out.
- Every pod runs on the host network (`--network host`): container `ports` are dropped (podman
  refuses to publish them there), one replica per Deployment, and the ports the processes bind
  (web 8000, metrics 9100/9101, the MCP sidecar's 8765, the ConfigMap's AIOPS_MCP_URL) are moved
  to the free ones given, since all pods share the host's ports.
- A Secret is a podman secret whose content is the Secret's `data` map as JSON (base64 values):
  podman 4.3 reads `secretKeyRef`s from that, and a `kind: Secret` in the played YAML is stored
  in a form it then fails to read ("secret ... is not valid JSON").
- There is no init-container retry: the migrate pod runs (and exits 0) before web and worker
  start, so their `wait-for-migrations` init container (`migrate --check`) passes the first time.
  Pods carry `io.podman.annotations.init.container.type: always`: podman 4.3 removes a
  default (`once`) init container right after it exits and fails the pod when that removal
  races the exit ("cannot remove container ... as it is running").
- Probes become podman healthchecks run by systemd timers; without systemd they are dropped
  (the test asks `/ready` itself, as the readiness probe would).
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

KEPT_KINDS = ("ConfigMap", "Deployment", "Job")
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
INIT_TYPE = "io.podman.annotations.init.container.type"
# env var (in a container's env, or the ConfigMap) -> the key of the port it names in `ports`.
PORT_ENV = {
    "AIOPS_WEB_METRICS_PORT": "web_metrics",
    "AIOPS_WORKER_METRICS_PORT": "worker_metrics",
    "AIOPS_MCP_PORT": "mcp",
    "AIOPS_MCP_METRICS_PORT": "mcp_metrics",
}


def secret_data(values: Mapping[str, str]) -> str:
    """A Secret's content as podman reads it (`podman secret create NAME -`): the `data` map, JSON."""
    return json.dumps({key: base64.b64encode(value.encode()).decode() for key, value in values.items()})


def _container(container: dict[str, Any], ports: Mapping[str, int]) -> dict[str, Any]:
    container = copy.deepcopy(container)
    container.pop("ports", None)
    for probe in PROBES:
        container.pop(probe, None)
    env = container.setdefault("env", [])
    for item in env:
        if item["name"] in PORT_ENV and "value" in item:
            item["value"] = str(ports[PORT_ENV[item["name"]]])
    if container.get("args", [None])[0] == "web" and not any(item["name"] == "AIOPS_WEB_PORT" for item in env):
        env.append({"name": "AIOPS_WEB_PORT", "value": str(ports["web"])})
    return container


def _pod_spec(spec: dict[str, Any], ports: Mapping[str, int]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    spec["hostNetwork"] = True
    spec["containers"] = [_container(c, ports) for c in spec["containers"]]
    if spec.get("initContainers"):
        spec["initContainers"] = [_container(c, ports) for c in spec["initContainers"]]
    return spec


def transform(objects: Iterable[dict[str, Any]], ports: Mapping[str, int]) -> list[dict[str, Any]]:
    """The objects podman plays, in order: the ConfigMaps, the migrate Job's pod, the Deployments.
    `ports` gives web, web_metrics, worker_metrics, mcp and mcp_metrics."""
    config: list[dict[str, Any]] = []
    jobs: list[dict[str, Any]] = []
    deployments: list[dict[str, Any]] = []
    for obj in objects:
        if obj["kind"] not in KEPT_KINDS:
            continue
        obj = copy.deepcopy(obj)
        obj["metadata"].pop("namespace", None)
        if obj["kind"] == "ConfigMap":
            data = obj.get("data", {})
            if "AIOPS_MCP_URL" in data:
                data["AIOPS_MCP_URL"] = f"http://127.0.0.1:{ports['mcp']}/mcp"
            config.append(obj)
        elif obj["kind"] == "Job":
            template = obj["spec"]["template"]
            jobs.append({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": obj["metadata"]["name"], "labels": template["metadata"].get("labels", {})},
                "spec": _pod_spec(template["spec"], ports),
            })
        else:
            obj["spec"]["replicas"] = 1
            template = obj["spec"]["template"]
            template["spec"] = _pod_spec(template["spec"], ports)
            if template["spec"].get("initContainers"):
                # podman 4.3 reads it from the Deployment's own annotations, not the template's.
                obj["metadata"].setdefault("annotations", {})[INIT_TYPE] = "always"
            deployments.append(obj)
    return [*config, *jobs, *deployments]


def dump(objects: Iterable[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(list(objects), sort_keys=False)


def _env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise SystemExit(f"{path}: {line!r} is not KEY=VALUE")
            values[key.strip()] = value.strip()
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kube_play.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    secret = sub.add_parser("secret", help="a Secret's content for `podman secret create NAME -`")
    secret.add_argument("values", type=Path, help="KEY=VALUE lines (as for kubectl create secret --from-env-file)")
    play = sub.add_parser("play", help="the YAML to `podman kube play --network host`")
    play.add_argument("rendered", type=Path, help="kubectl kustomize output")
    play.add_argument("--ports", type=Path, required=True,
                      help="KEY=VALUE lines: web, web_metrics, worker_metrics, mcp, mcp_metrics")
    play.add_argument("--part", choices=("migrate", "apps", "all"), default="all",
                      help="the migrate pod (play it first), the Deployments, or both")
    options = parser.parse_args(argv)
    if options.command == "secret":
        print(secret_data(_env_file(options.values)))
        return 0
    objects = [doc for doc in yaml.safe_load_all(options.rendered.read_text()) if doc]
    ports = {key: int(value) for key, value in _env_file(options.ports).items()}
    played = transform(objects, ports)
    wanted = {"migrate": ("ConfigMap", "Pod"), "apps": ("ConfigMap", "Deployment"), "all": ("ConfigMap", "Pod", "Deployment")}
    sys.stdout.write(dump(obj for obj in played if obj["kind"] in wanted[options.part]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
