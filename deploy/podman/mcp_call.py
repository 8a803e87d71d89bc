"""`python mcp_call.py URL TOKEN TOOL EXPECTED`: one tool call through the MCP SDK over streamable
HTTP with the bearer token, as the worker's client makes it; exit 0 when the result is not an
error and its text holds EXPECTED. deploy/verify-image.sh runs it in a container of the image."""

from __future__ import annotations

import sys

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def call(url: str, token: str, tool: str) -> tuple[bool, str]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        result = await client.call_tool(tool, {})
        text = " ".join(getattr(part, "text", "") for part in result.content)
        return bool(result.is_error), text


def main() -> int:
    url, token, tool, expected = sys.argv[1:5]
    is_error, text = anyio.run(call, url, token, tool)
    print(f"mcp {tool}: {'error' if is_error else 'ok'}: {text[:300]}")
    return 0 if not is_error and expected in text else 1


if __name__ == "__main__":
    sys.exit(main())
