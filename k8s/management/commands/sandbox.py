"""`manage.py sandbox`: serve the sandbox cluster, and inject or clear faults on a running one.

    sandbox serve [--port N] [--kubeconfig PATH] [--scenario demo|empty] [--tls] [--tick SECONDS]
    sandbox fault TYPE TARGET [--kubeconfig PATH] [--persistent] [--option KEY=VALUE ...]
    sandbox fault clear TARGET [--kubeconfig PATH]
    sandbox faults [--kubeconfig PATH]
    sandbox reset [--scenario demo|empty] [--kubeconfig PATH]
    sandbox generate --pods N [--nodes N] [--deployments N] [--kubeconfig PATH]

A running sandbox is controlled over its admin endpoint (`/sandbox/v1/...`), found through
the kubeconfig it wrote and guarded by the bearer token in it.
"""

from __future__ import annotations

import base64
import signal
import ssl
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from k8s.sandbox import FAULT_TYPES, SCENARIOS


def default_kubeconfig() -> Path:
    return Path(settings.RUN_DIR) / "sandbox" / "kubeconfig"


class AdminClient:
    """Talks to a running sandbox's admin endpoint with the URL, CA and token of its kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        try:
            config = yaml.safe_load(kubeconfig.read_text())
            cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == "sandbox")
            user = next(u["user"] for u in config["users"] if u["name"] == "sandbox-admin")
            self.url = cluster["server"].rstrip("/")
            if not self.url.startswith(("http://", "https://")):
                raise KeyError(f"server {self.url!r} is not an http(s) URL")
            self.token = user["token"]
        except FileNotFoundError:
            raise CommandError(f"no sandbox kubeconfig at {kubeconfig} (is `sandbox serve` running? give --kubeconfig)") from None
        except (OSError, yaml.YAMLError, KeyError, StopIteration, TypeError) as exc:
            raise CommandError(f"{kubeconfig} is not a sandbox kubeconfig: {exc!r}") from None
        self.context: ssl.SSLContext | None = None
        if cluster.get("certificate-authority-data"):
            self.context = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = httpx.request(
                method, f"{self.url}/sandbox/v1/{path}", content=orjson.dumps(body) if body is not None else None,
                headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
                verify=self.context or True, timeout=60,
            )
        except httpx.HTTPError as exc:
            raise CommandError(f"the sandbox at {self.url} does not answer ({exc}); is `sandbox serve` running?") from None
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise CommandError(f"the sandbox at {self.url} answered {response.status_code}: {response.text[:200]}") from None
        if response.status_code >= 400:
            raise CommandError(data.get("message", response.text) if isinstance(data, dict) else response.text)
        return data


def _options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--option {pair!r} must look like KEY=VALUE")
        options[key] = int(value) if value.isdigit() else value
    return options


class Command(BaseCommand):
    help = "Serve the sandbox Kubernetes cluster, or inject/clear faults on a running one."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{serve,fault,faults,reset,generate}")

        def kubeconfig_arg(p: CommandParser) -> None:
            p.add_argument("--kubeconfig", type=Path, default=None,
                           help="The sandbox's kubeconfig (default: RUN_DIR/sandbox/kubeconfig).")

        serve = sub.add_parser("serve", help="Serve a sandbox until stopped.")
        serve.add_argument("--port", type=int, default=0, help="Port on 127.0.0.1 (0: a free one).")
        kubeconfig_arg(serve)
        serve.add_argument("--scenario", choices=SCENARIOS, default="demo")
        serve.add_argument("--tls", action="store_true", help="Serve HTTPS with a generated certificate; the API then needs the token.")
        serve.add_argument("--tick", type=float, default=10.0, help="Seconds between simulation steps (default 10).")

        fault = sub.add_parser("fault", help="Inject a fault (TYPE TARGET), or clear one (clear TARGET).")
        fault.add_argument("type", metavar="TYPE", help=f"clear, or one of: {', '.join(FAULT_TYPES)}")
        fault.add_argument("target", metavar="TARGET", help="NAMESPACE/NAME, or a node name")
        fault.add_argument("--persistent", action="store_true", help="crash_loop: survive pod restarts (clears on rollback).")
        fault.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                           help="Fault option, e.g. need=512Mi, demand=9, status=False, exit_code=2 (repeatable).")
        kubeconfig_arg(fault)

        faults = sub.add_parser("faults", help="List active faults and recently cleared ones.")
        kubeconfig_arg(faults)

        reset = sub.add_parser("reset", help="Reseed a running sandbox.")
        reset.add_argument("--scenario", choices=SCENARIOS, default="demo")
        kubeconfig_arg(reset)

        generate = sub.add_parser("generate", help="Add N healthy pods (scale tests).")
        generate.add_argument("--pods", type=int, required=True)
        generate.add_argument("--nodes", type=int, default=None)
        generate.add_argument("--deployments", type=int, default=None)
        kubeconfig_arg(generate)

    def handle(self, *args: Any, **opts: Any) -> None:
        kubeconfig: Path = opts.get("kubeconfig") or default_kubeconfig()
        action = opts["action"]
        if action == "serve":
            self._serve(opts, kubeconfig)
            return
        if action == "fault" and opts["type"] != "clear":
            if opts["type"] not in FAULT_TYPES:
                raise CommandError(f"unknown fault type {opts['type']!r}; choose clear or one of: {', '.join(FAULT_TYPES)}")
            options = _options(opts["option"])
        client = AdminClient(kubeconfig)
        if action == "fault":
            if opts["type"] == "clear":
                cleared = client.call("POST", "faults/clear", {"target": opts["target"]})["cleared"]
                for f in cleared:
                    self.stdout.write(f"cleared {f['type']} on {f['target']}")
                return
            if opts["persistent"]:
                options["transient"] = False
            result = client.call("POST", "faults", {"type": opts["type"], "target": opts["target"], "options": options})
            self.stdout.write(f"injected {result['type']} on {result['target']} {orjson.dumps(result['options']).decode()}")
        elif action == "faults":
            result = client.call("GET", "faults")
            for f in result["faults"]:
                self.stdout.write(f"active   {f['type']:<20} {f['target']:<32} since {f['injected_at']}")
            for f in result["cleared"]:
                self.stdout.write(f"cleared  {f['type']:<20} {f['target']:<32} by {f['cleared_by']}")
        elif action == "reset":
            client.call("POST", "reset", {"scenario": opts["scenario"]})
            self.stdout.write(f"reset to {opts['scenario']}")
        elif action == "generate":
            result = client.call("POST", "generate", {"pods": opts["pods"], "nodes": opts["nodes"], "deployments": opts["deployments"]})
            self.stdout.write(f"generated {result['pods']} pods in {result['deployments']} deployments on {result['nodes']} nodes")

    def _serve(self, opts: dict[str, Any], kubeconfig: Path) -> None:
        from k8s.sandbox import Sandbox

        if not 0 <= opts["port"] <= 65535:
            raise CommandError(f"--port {opts['port']} is not a port number")
        if opts["tick"] <= 0:
            raise CommandError(f"--tick {opts['tick']} must be above 0 seconds")
        kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        try:
            sandbox = Sandbox(port=opts["port"], tls=opts["tls"], scenario=opts["scenario"], kubeconfig=kubeconfig,
                              state_dir=kubeconfig.parent, tick_interval=opts["tick"])
            sandbox.start()
        except OSError as exc:
            raise CommandError(f"cannot serve on 127.0.0.1:{opts['port']}: {exc.strerror}") from None

        def stop(signum: int, frame: object) -> None:
            sandbox.request_stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"sandbox cluster serving {sandbox.url} (scenario {opts['scenario']}); kubeconfig {kubeconfig}")
        self.stdout.flush()
        sandbox.wait()
        sandbox.stop()
        self.stdout.write("sandbox stopped")
