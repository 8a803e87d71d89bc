"""MCPServer, MCPTool, Approval, AuditEntry (the tools and risk gate room)."""

from __future__ import annotations

__all__: list[str] = []
