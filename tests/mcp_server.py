"""A real MCP server written with the official SDK's FastMCP, for the tool tests: served
over streamable HTTP or SSE on a loopback port (in a thread, stoppable and restartable on
the same port), or over stdio (`python -m tests.mcp_server`).

Tools: `add` (sums two numbers), `slow` (sleeps, then says how long), `fail` (raises),
`env` (a variable of its process), `whoami` (the Authorization header it was called with),
and one `hint_<case>` tool per combination of the spec's tool annotations in `HINTS`
(each answers "done"), with whether the agentrunner client may repeat its calls.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

from mcp.server.fastmcp import Context, FastMCP
from mcp.types import ToolAnnotations

from tests.ports import free_port
from tests.threaded_server import ThreadedServer

# Per annotated tool: its annotations (None: none at all), and whether its calls may be
# repeated after a crash (readOnlyHint or idempotentHint true; nothing else).
HINTS: dict[str, tuple[ToolAnnotations | None, bool]] = {
    "none": (None, False),
    "empty": (ToolAnnotations(), False),
    "title_only": (ToolAnnotations(title="Looks harmless"), False),
    "read_only": (ToolAnnotations(readOnlyHint=True), True),
    "read_only_not_idempotent": (ToolAnnotations(readOnlyHint=True, idempotentHint=False), True),
    "idempotent": (ToolAnnotations(idempotentHint=True), True),
    "destructive_idempotent": (ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True), True),
    "destructive": (ToolAnnotations(destructiveHint=True), False),
    "additive": (ToolAnnotations(readOnlyHint=False, destructiveHint=False), False),
    "not_idempotent": (ToolAnnotations(readOnlyHint=False, idempotentHint=False), False),
    "not_destructive_only": (ToolAnnotations(destructiveHint=False, openWorldHint=False), False),
}


def build_server() -> FastMCP:
    """A fresh FastMCP server (a session manager runs once: a restart needs a new one)."""
    server = FastMCP("agentrunner-test-tools")

    @server.tool()
    def add(a: float, b: float) -> str:
        """Add two numbers."""
        return str(a + b)

    @server.tool()
    async def slow(seconds: float) -> str:
        """Wait `seconds`, then answer."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool()
    def fail(reason: str = "broken") -> str:
        """Always fails."""
        raise RuntimeError(f"the tool failed: {reason}")

    @server.tool()
    def env(name: str) -> str:
        """The value of an environment variable of the server's process."""
        return str(os.environ.get(name))

    @server.tool()
    def whoami(ctx: Context) -> str:  # type: ignore[type-arg]
        """The Authorization header of the request."""
        request = ctx.request_context.request
        headers = getattr(request, "headers", None)
        return str(headers.get("authorization") if headers is not None else None)

    def done() -> str:
        return "done"

    for case, (hints, _) in HINTS.items():
        server.add_tool(done, name=f"hint_{case}", description=f"Annotated: {case}.", annotations=hints)

    return server


@dataclass
class McpHttpServer:
    """The test server over HTTP on a loopback port: `start()`, `stop()`, `start()` again
    on the same port. `transport` is "streamable-http" (path /mcp) or "sse" (path /sse)."""

    transport: str = "streamable-http"
    port: int = field(default_factory=free_port)
    _served: ThreadedServer = field(init=False)

    def __post_init__(self) -> None:
        self._served = ThreadedServer("MCP test server", self.port)

    @property
    def url(self) -> str:
        path = "/sse" if self.transport == "sse" else "/mcp"
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> McpHttpServer:
        mcp = build_server()
        self._served.start(mcp.sse_app() if self.transport == "sse" else mcp.streamable_http_app(), lifespan="on")
        return self

    def stop(self) -> None:
        self._served.stop()

    def __enter__(self) -> McpHttpServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


if __name__ == "__main__":
    build_server().run("stdio")
