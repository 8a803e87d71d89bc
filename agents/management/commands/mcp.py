"""`manage.py mcp sync|import|list`: fill and show the tool registry."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "MCP servers and the tool registry: sync (from servers), import (a .mcp-config.json), list."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sync = sub.add_parser("sync", help="register our own tools from code and list every enabled server's tools")
        sync.add_argument("--server", help="sync only this server")
        sync.add_argument("--builtin-only", action="store_true", help="only register our own server's tools")
        imp = sub.add_parser("import", help="create/update servers from a .mcp-config.json ({\"mcpServers\": ...})")
        imp.add_argument("path")
        imp.add_argument("--sync", action="store_true", help="sync the imported servers afterwards")
        show = sub.add_parser("list", help="show registered tools")
        show.add_argument("--risk", choices=["LOW", "MEDIUM", "HIGH"])

    def handle(self, *args: Any, **options: Any) -> None:
        from agents import registry
        from agents.mcp_client import MCPConfigError
        from agents.models import MCPServer

        action = options["action"]
        if action == "sync":
            if options["builtin_only"]:
                server = registry.register_builtin()
                self.stdout.write(f"{server.name}: {server.tools.filter(available=True).count()} tools (from code)")
                return
            if options["server"]:
                server = MCPServer.objects.filter(name=options["server"]).first()
                if server is None:
                    names = ", ".join(MCPServer.objects.values_list("name", flat=True)) or "none"
                    raise CommandError(f"no MCP server named {options['server']!r} (servers: {names})")
                try:
                    tools = registry.sync_server(server)
                except Exception as exc:
                    raise CommandError(f"{server.name}: sync failed: {exc}") from None
                self.stdout.write(f"{server.name}: {len(tools)} tools")
                return
            failed = False
            for name, outcome in registry.sync_all().items():
                failed = failed or outcome.startswith("failed")
                self.stdout.write(f"{name}: {outcome}")
            if failed:
                # Our own tools are registered; a third-party failure is reported, not fatal.
                self.stderr.write("some servers could not be synced (see above); their tools keep their last state")
        elif action == "import":
            try:
                servers = registry.import_mcp_config(options["path"])
            except MCPConfigError as exc:
                raise CommandError(f"{options['path']}: {exc}" if options["path"] not in str(exc) else str(exc)) from None
            for server in servers:
                line = f"{server.name}: {server.transport}"
                if options["sync"]:
                    try:
                        line += f", {len(registry.sync_server(server))} tools"
                    except Exception as exc:  # noqa: BLE001
                        line += f", sync failed: {exc}"
                self.stdout.write(line)
        else:
            for tool in registry.list_tools(options["risk"]):
                self.stdout.write(f"{tool.risk:6} {tool.name:40} {tool.server.name}")
