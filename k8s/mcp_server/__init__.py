"""Our Kubernetes MCP server: `python -m k8s.mcp_server` (see `__main__` for the options).

`tools.TOOL_SPECS` holds every tool's metadata and imports nothing heavy, so the agents app
and the deploy manifests can read it without starting the server.
"""
