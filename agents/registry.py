"""The tool registry: which tools exist, on which server, with which schema and risk class.

Our own Kubernetes MCP server's tools are registered from its code (`TOOL_SPECS`) without
starting it; a third-party server's tools come from its `list_tools` and are HIGH until an
admin lowers them. Callers name a tool by `MCPTool.name`: ours keep their plain names, a
third-party tool is `<server>__<tool>` so two servers can never shadow each other (and the
name stays a valid OpenAI function name).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.mcp_client import MCPConfigError, ServerConfig, manager
from agents.models import MCPServer, MCPTool, Risk

log = structlog.get_logger(__name__)

BUILTIN_SERVER = "kubernetes"
RISK_ORDER = {Risk.LOW: 0, Risk.MEDIUM: 1, Risk.HIGH: 2}


class UnknownTool(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no enabled tool named {name!r} is registered (run `manage.py mcp sync`?)")
        self.name = name


def get_tool(name: str) -> MCPTool:
    tool = MCPTool.objects.select_related("server").filter(
        name=name, enabled=True, available=True, server__enabled=True
    ).first()
    if tool is None:
        raise UnknownTool(name)
    return tool


def tool_risk(name: str) -> str:
    return get_tool(name).risk


def list_tools(risk: str | list[str] | None = None) -> list[MCPTool]:
    tools = MCPTool.objects.select_related("server").filter(enabled=True, available=True, server__enabled=True)
    if risk is not None:
        tools = tools.filter(risk__in=[risk] if isinstance(risk, str) else risk)
    return list(tools.order_by("name"))


def server_config(server: MCPServer) -> ServerConfig:
    return ServerConfig.from_model(server, settings.AIOPS_MCP_TIMEOUT)


# --- our own server --------------------------------------------------------------------
def register_builtin(url: str | None = None) -> MCPServer:
    """Register k8s.mcp_server and its tools from code. An admin may raise a tool's risk, never
    lower it below what the code says: the code's class is the floor of our safety story."""
    from k8s.mcp_server.tools import TOOL_SPECS

    now = timezone.now()
    with transaction.atomic():
        server, _ = MCPServer.objects.update_or_create(
            name=BUILTIN_SERVER,
            defaults={
                "builtin": True,
                "transport": MCPServer.Transport.STREAMABLE_HTTP,
                "url": url or settings.AIOPS_MCP_URL,
                "headers": {"Authorization": "Bearer ${AIOPS_MCP_TOKEN}"},
                "description": "Our Kubernetes MCP server (python -m k8s.mcp_server).",
                "last_sync_at": now,
                "last_error": "",
            },
        )
        for spec in TOOL_SPECS.values():
            existing = MCPTool.objects.filter(server=server, remote_name=spec.name).first()
            risk = spec.risk
            if existing and existing.risk_set_by_admin and RISK_ORDER[existing.risk] > RISK_ORDER[spec.risk]:
                risk = existing.risk
            _upsert_tool(server, spec.name, spec.name, {
                "description": spec.description,
                "input_schema": spec.input_schema,
                "risk": risk,
                "verbs": spec.verbs,
                "resources": spec.resources,
                "read_only_hint": spec.read_only,
                "destructive_hint": spec.destructive,
            }, now)
        MCPTool.objects.filter(server=server).exclude(remote_name__in=list(TOOL_SPECS)).update(available=False)
    log.info("mcp_builtin_registered", server=server.name, tools=len(TOOL_SPECS), url=server.url)
    return server


def _upsert_tool(server: MCPServer, name: str, remote_name: str, fields: dict[str, Any], now: Any) -> MCPTool:
    tool = MCPTool.objects.filter(server=server, remote_name=remote_name).first()
    if tool is None:
        return MCPTool.objects.create(server=server, name=name, remote_name=remote_name, synced_at=now,
                                      available=True, **fields)
    for key, value in fields.items():
        setattr(tool, key, value)
    tool.available = True
    tool.synced_at = now
    tool.save(update_fields=[*fields, "available", "synced_at"])
    return tool


# --- third-party servers -----------------------------------------------------------------
def sync_server(server: MCPServer) -> list[MCPTool]:
    """Fill the registry from the server's list_tools. New tools are HIGH; a risk an admin set is kept."""
    if server.builtin:
        register_builtin(server.url)
        return list(server.tools.all())
    try:
        tools = manager().list_tools(server_config(server))
    except Exception as exc:
        MCPServer.objects.filter(pk=server.pk).update(last_error=str(exc)[:2000])
        raise
    now = timezone.now()
    seen = []
    with transaction.atomic():
        for remote in tools:
            annotations = remote.annotations
            read_only = bool(annotations and annotations.read_only_hint)
            existing = MCPTool.objects.filter(server=server, remote_name=remote.name).first()
            fields: dict[str, Any] = {
                "description": remote.description or "",
                "input_schema": remote.input_schema or {"type": "object"},
                "read_only_hint": read_only,
                "destructive_hint": not read_only and (annotations is None or annotations.destructive_hint is not False),
            }
            if existing is None or not existing.risk_set_by_admin:
                # A third-party server's own hints are not trusted (the MCP spec says as much).
                fields["risk"] = Risk.HIGH
            _upsert_tool(server, f"{server.name}__{remote.name}", remote.name, fields, now)
            seen.append(remote.name)
        MCPTool.objects.filter(server=server).exclude(remote_name__in=seen).update(available=False)
        MCPServer.objects.filter(pk=server.pk).update(last_sync_at=now, last_error="")
    log.info("mcp_server_synced", server=server.name, tools=len(seen))
    return list(server.tools.filter(available=True))


def sync_all() -> dict[str, str]:
    """Sync every enabled server; one server's failure does not stop the others."""
    outcome: dict[str, str] = {}
    register_builtin()
    outcome[BUILTIN_SERVER] = "registered from code"
    for server in MCPServer.objects.filter(enabled=True, builtin=False):
        try:
            outcome[server.name] = f"{len(sync_server(server))} tools"
        except Exception as exc:  # noqa: BLE001  (reported per server, not fatal for the rest)
            log.warning("mcp_server_sync_failed", server=server.name, error=str(exc))
            outcome[server.name] = f"failed: {exc}"
    return outcome


# --- the seed's .mcp-config.json -----------------------------------------------------------
_TRANSPORTS = {
    "stdio": MCPServer.Transport.STDIO,
    "sse": MCPServer.Transport.SSE,
    "http": MCPServer.Transport.STREAMABLE_HTTP,
    "streamable-http": MCPServer.Transport.STREAMABLE_HTTP,
    "streamablehttp": MCPServer.Transport.STREAMABLE_HTTP,
    "streamable_http": MCPServer.Transport.STREAMABLE_HTTP,
}


def _server_name(raw: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", raw.strip().lower()).strip("-")[:63].strip("-")
    if not name:
        raise MCPConfigError(f"server name {raw!r} has no usable characters")
    return name


def import_mcp_config(source: str | Path | dict[str, Any]) -> list[MCPServer]:
    """Create or update servers from `{"mcpServers": {name: {type, command, args, env, url, headers}}}`.
    All or nothing: one bad entry names itself and nothing is written."""
    if isinstance(source, dict):
        data = source
    else:
        try:
            data = json.loads(Path(source).read_text())
        except FileNotFoundError:
            raise MCPConfigError(f"{source}: no such file") from None
        except json.JSONDecodeError as exc:
            raise MCPConfigError(f"{source}: not JSON ({exc})") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict) or not servers:
        raise MCPConfigError('expected {"mcpServers": {"name": {...}, ...}} with at least one server')
    rows = []
    for raw_name, entry in servers.items():
        where = f"mcpServers.{raw_name}"
        if not isinstance(entry, dict):
            raise MCPConfigError(f"{where}: must be an object")
        kind = str(entry.get("type") or entry.get("transport") or ("stdio" if "command" in entry else "")).lower()
        if kind not in _TRANSPORTS:
            raise MCPConfigError(f"{where}: unknown type {kind or '(none)'!r}; use stdio, http or sse")
        transport = _TRANSPORTS[kind]
        fields: dict[str, Any] = {"transport": transport, "description": str(entry.get("description", ""))[:300]}
        if transport == MCPServer.Transport.STDIO:
            if not isinstance(entry.get("command"), str) or not entry["command"]:
                raise MCPConfigError(f"{where}: a stdio server needs a command")
            args = entry.get("args", [])
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise MCPConfigError(f"{where}: args must be a list of strings")
            env = entry.get("env", {})
            if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
                raise MCPConfigError(f"{where}: env must map names to strings")
            fields.update(command=entry["command"], args=args, env=env, url="")
        else:
            url = entry.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise MCPConfigError(f"{where}: an {kind} server needs an http(s) url")
            headers = entry.get("headers", {})
            if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
                raise MCPConfigError(f"{where}: headers must map names to strings")
            fields.update(url=url, headers=headers, command="", args=[], env={})
        name = _server_name(raw_name)
        if name == BUILTIN_SERVER:
            raise MCPConfigError(f"{where}: the name {BUILTIN_SERVER!r} is reserved for our own server")
        rows.append((name, fields))
    with transaction.atomic():
        result = [MCPServer.objects.update_or_create(name=name, defaults=fields)[0] for name, fields in rows]
    log.info("mcp_config_imported", servers=[s.name for s in result])
    return result
