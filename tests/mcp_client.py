"""The `mcp` SDK's own client on the platform's `/mcp`: a session over a caller's httpx
client (its key, its transport), and the text of a tool's answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent


@asynccontextmanager
async def mcp_session_over(client: httpx.AsyncClient, url: str) -> AsyncIterator[ClientSession]:
    """An initialised MCP session with the server at `url`, through `client`."""
    async with (
        streamable_http_client(url, http_client=client) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def text_of(result: CallToolResult) -> str:
    """The text of a tool's answer (its first content block)."""
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text
