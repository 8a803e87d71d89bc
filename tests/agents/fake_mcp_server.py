"""A small third-party MCP server for the tests (stdio), written with the official SDK.

`set_value` appends to the file named by FAKE_MCP_LOG, so a test can count how many times a
mutating call really ran; `pid` tells which server process answered (the tests kill it to
prove sessions are reopened); `sleep` outlives a client's timeout.
"""

from __future__ import annotations

import os

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("fake-tools")


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


@server.tool()
def set_value(key: str, value: str) -> str:
    """Record key=value (a stand-in for a mutating tool)."""
    with open(os.environ["FAKE_MCP_LOG"], "a") as handle:
        handle.write(f"{key}={value}\n")
    return f"set {key}={value}"


@server.tool()
def big_output(size: int) -> str:
    """Return `size` characters."""
    return "x" * size


@server.tool()
def fail(message: str) -> str:
    """Always fails with the message (a tool error)."""
    raise ToolError(message)


@server.tool()
def pid() -> int:
    """The server's process id (one per session)."""
    return os.getpid()


@server.tool()
async def sleep(seconds: float) -> str:
    """Answer after `seconds` (to exceed a client's timeout)."""
    await anyio.sleep(seconds)
    return "slept"


if __name__ == "__main__":
    server.run()
