"""The MCP server itself, on the SDK's low-level `Server` so the schemas it lists are exactly
`TOOL_SPECS` (the agents app registers from the same specs without starting us).

Every call is checked before any API call: the tool exists (and is served: `--read-only`
serves LOW tools alone), names are DNS-1123, the arguments match the schema. Tool errors are
MCP results with `is_error`, never a success carrying an error text. The Kubernetes client is
synchronous, so each call runs in a worker thread.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import jsonschema
import orjson
import structlog
from kubernetes.client import ApiClient

from k8s.mcp_server import kube
from k8s.mcp_server.metrics import CALL_DURATION, CALLS
from k8s.mcp_server.operations import OPERATIONS
from k8s.mcp_server.prometheus import query_prometheus
from k8s.mcp_server.tools import LABEL_MAX, SUBDOMAIN_MAX, TOOL_SPECS, ToolSpec
from k8s.names import is_dns1123_label, is_dns1123_subdomain, validate_json

log = structlog.get_logger(__name__)


class ToolInputError(Exception):
    """Arguments refused before any API call."""


def check_arguments(spec: ToolSpec, args: Any) -> dict[str, Any]:
    if not isinstance(args, dict):
        raise ToolInputError("arguments must be a JSON object")
    for arg, kind in spec.name_args.items():
        if arg not in args or args[arg] is None:
            continue
        value = args[arg]
        if not isinstance(value, str):
            raise ToolInputError(f"{arg} must be a string, not {type(value).__name__}")
        limit, valid = (LABEL_MAX, is_dns1123_label) if kind == "label" else (SUBDOMAIN_MAX, is_dns1123_subdomain)
        if not valid(value):
            shown = value if len(value) <= 80 else value[:77] + "..."
            raise ToolInputError(
                f"{arg} {shown!r} is not a valid Kubernetes name (DNS-1123 {kind}: lowercase letters, digits "
                f"and '-'{', dots between parts' if kind == 'subdomain' else ''}, at most {limit} characters)"
            )
    try:
        validate_json(args, spec.input_schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "arguments"
        raise ToolInputError(f"{where}: {exc.message}") from None
    return args


class ClusterResolver:
    """Turns the `cluster` argument into an ApiClient: registered Clusters when Django is set
    up, otherwise a kubeconfig context (or the in-cluster service account)."""

    def __init__(self, *, kubeconfig: str | None, context: str | None, use_django: bool) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.use_django = use_django
        self._cache: dict[Any, ApiClient] = {}
        self._lock = threading.Lock()

    def _row(self, cluster: str | None) -> Any:
        from django.db import close_old_connections

        from k8s.models import Cluster

        close_old_connections()
        rows = Cluster.objects.filter(enabled=True)
        row = rows.filter(name=cluster).first() if cluster else rows.filter(is_default=True).first()
        if row is None:
            known = ", ".join(rows.values_list("name", flat=True)) or "none"
            wanted = f"named {cluster!r}" if cluster else "marked default"
            raise kube.ToolFailure(f"no enabled cluster {wanted} is registered (clusters: {known})")
        return row

    def prometheus_for(self, cluster: str | None) -> str:
        """The cluster's Prometheus URL: its row's `prometheus_url`, or AIOPS_PROMETHEUS_URL outside Django."""
        if self.use_django:
            return str(self._row(cluster).prometheus_url or "")
        return os.environ.get("AIOPS_PROMETHEUS_URL", "")

    def api_for(self, cluster: str | None) -> ApiClient:
        from k8s.client import ClusterConfigError, api_client_for, api_client_for_kubeconfig, api_client_in_cluster

        if self.use_django:
            row = self._row(cluster)
            # Keyed by what the client is built from (not updated_at, which the watch loop's
            # health writes move every poll), so the cache holds one client per cluster.
            key: Any = ("db", row.pk, row.kubeconfig_path, row.context, row.in_cluster)
            build: Callable[[], ApiClient] = lambda: api_client_for(row)  # noqa: E731
        elif self.kubeconfig:
            context = cluster or self.context
            key = ("kubeconfig", context)
            build = lambda: api_client_for_kubeconfig(self.kubeconfig or "", context)  # noqa: E731
        else:
            if cluster:
                raise kube.ToolFailure("this server runs in-cluster; it serves no other cluster")
            key = ("in-cluster",)
            build = api_client_in_cluster
        with self._lock:
            if key not in self._cache:
                try:
                    client = build()
                except ClusterConfigError as exc:
                    raise kube.ToolFailure(str(exc)) from None
                # An edited cluster replaces its old client instead of piling up next to it.
                for stale in [k for k in self._cache if k[:2] == key[:2]]:
                    self._cache.pop(stale).close()
                self._cache[key] = client
            return self._cache[key]


def run_tool(resolver: ClusterResolver, spec: ToolSpec, args: dict[str, Any], timeout: float) -> Any:
    args = dict(args)
    cluster = args.pop("cluster", None)
    if spec.name == "query_prometheus":
        return query_prometheus(resolver.prometheus_for(cluster), timeout=timeout, **args)
    k = kube.Kube(resolver.api_for(cluster), timeout=timeout)
    return OPERATIONS[spec.name](k, **args)


def _text(result: Any) -> str:
    return result if isinstance(result, str) else orjson.dumps(result).decode()


def build_server(resolver: ClusterResolver, *, read_only: bool = False, timeout: float = 20.0) -> Any:
    from mcp.server.lowlevel import Server
    from mcp.types import CallToolResult, ListToolsResult, TextContent, Tool, ToolAnnotations

    served = {name: spec for name, spec in TOOL_SPECS.items() if not read_only or spec.risk == "LOW"}
    tools = [
        Tool(
            name=spec.name,
            description=f"[{spec.risk}] {spec.description}",
            input_schema=spec.input_schema,
            annotations=ToolAnnotations(
                title=spec.name.replace("_", " "),
                read_only_hint=spec.read_only,
                destructive_hint=spec.destructive,
                idempotent_hint=True,
                open_world_hint=False,
            ),
            _meta=spec.meta(),
        )
        for spec in served.values()
    ]

    def error(message: str) -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)

    async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: Any) -> CallToolResult:
        name, args = params.name, params.arguments or {}
        spec = served.get(name)
        if spec is None:
            outcome = "refused"
            message = (f"{name} is not served in read-only mode" if name in TOOL_SPECS
                       else f"unknown tool {name!r}")
            CALLS.labels(name if name in TOOL_SPECS else "unknown", outcome).inc()
            return error(message)
        started = time.monotonic()
        try:
            check_arguments(spec, args)
        except ToolInputError as exc:
            CALLS.labels(name, "invalid").inc()
            log.info("mcp_tool_refused", tool=name, reason=str(exc))
            return error(f"{name}: {exc}")
        try:
            result = await anyio.to_thread.run_sync(run_tool, resolver, spec, args, timeout)
        except kube.ToolFailure as exc:
            CALLS.labels(name, "error").inc()
            log.info("mcp_tool_failed", tool=name, error=str(exc))
            return error(f"{name}: {exc}")
        except Exception as exc:  # noqa: BLE001  (a connection error to the API server is still a tool error)
            CALLS.labels(name, "error").inc()
            log.warning("mcp_tool_crashed", tool=name, error=repr(exc))
            return error(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            CALL_DURATION.labels(name).observe(time.monotonic() - started)
        CALLS.labels(name, "ok").inc()
        if spec.risk != "LOW":
            log.info("mcp_tool_changed_cluster", tool=name, args=args, result=_text(result)[:500])
        structured = result if isinstance(result, dict) else None
        return CallToolResult(content=[TextContent(type="text", text=_text(result))], structured_content=structured)

    return Server("aiops-kubernetes", version="1", on_list_tools=list_tools, on_call_tool=call_tool)


class BearerAuth:
    """ASGI middleware: every HTTP request needs `Authorization: Bearer <token>` (compared in
    constant time). Lifespan events pass through, so the SDK's session manager starts."""

    def __init__(self, app: Callable[..., Awaitable[None]], token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = b'{"error": "unauthorized: send Authorization: Bearer <AIOPS_MCP_TOKEN>"}'
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
