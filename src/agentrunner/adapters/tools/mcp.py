"""MCP servers as tools, through the official `mcp` SDK: streamable HTTP, SSE (older
servers) or stdio. One session per tool entry, kept open across executions in a task of
its own (the SDK's transports must be entered and left in one task), reconnected when it
drops. Auth headers and stdio environment come from `${VAR}` references, expanded only
when connecting: the secret never reaches the config, the registry table or a log.

The URL too may reference `${VAR}`. Such a URL is not what the operator wrote in the file,
so it goes through the egress guard (public addresses, or EGRESS_ALLOWED_NETWORKS); a
literal URL in the agent file is the operator's own choice and is trusted as written (an
MCP server on localhost or the internal network is common). Agent files are the operator's:
callers cannot write them (POST /configs/validate only parses).

Whether a tool's calls may be repeated after a crash comes from the server's tool
annotations (`repeatable_from`). A server's word is only a hint: annotations of the wrong
type or size are dropped (the tool is listed, not repeatable), never fail the listing
(mcp_annotations.py), and the agent file's `idempotent` overrides them (declared.py)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx

from agentrunner.adapters.egress import EgressGuard
from agentrunner.domain.agent import ToolConfig
from agentrunner.domain.egress import split_url
from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.domain.llm import ToolDefinition
from agentrunner.logs import get_logger
from agentrunner.ports.tools import Repeatable, ToolContext

if TYPE_CHECKING:
    # The MCP SDK is imported where a session is opened, not with this module: most
    # processes (every worker of agents without an MCP tool) never open one, and it was a
    # tenth of their start-up CPU.
    from mcp import ClientSession
    from mcp import types as mcp_types

log = get_logger(__name__)

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# Between an entry's name and its server's tool name, in the name the model sees
# (OpenAI and Anthropic accept only letters, digits, '_' and '-').
PREFIX_SEPARATOR = "__"


class ToolFailedError(Exception):
    """The MCP server ran the tool and reported an error (`isError`)."""


def expand(value: str, where: str) -> str:
    """`value` with each `${VAR}` replaced by the environment's value; raises
    `DependencyUnavailableError` naming the variable when it is not set."""

    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise DependencyUnavailableError(f"{where} references ${{{name}}}, which is not set in the environment")
        return os.environ[name]

    return _REFERENCE.sub(variable, value)


def _error_text(exc: BaseException) -> str:
    """The innermost useful message of an exception (task groups wrap them)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _client(
    tls: ssl.SSLContext,
    headers: dict[str, str] | None = None,
    timeout: httpx.Timeout | None = None,
    auth: httpx.Auth | None = None,
) -> httpx.AsyncClient:
    """An httpx client for a server at a URL the operator wrote, verifying with `tls`
    (the SDK's own factory's defaults otherwise)."""
    return httpx.AsyncClient(headers=headers, timeout=timeout or httpx.Timeout(30.0, read=300.0), auth=auth, verify=tls)


# The SDK's modules a session uses (`McpServer._streams`, `_hold`, `result_text`), and ours
# over it (`mcp_annotations`).
SDK_MODULES = (
    "mcp",
    "mcp.types",
    "mcp.client.sse",
    "mcp.client.stdio",
    "mcp.client.streamable_http",
    "agentrunner.adapters.tools.mcp_annotations",
)


async def load_sdk() -> None:
    """Import the MCP SDK off the event loop, once per process, before a server's session
    is opened: its first import reads files and its package's metadata (~100 ms of CPU),
    which on the loop would stall every run under way (a reload that adds an MCP tool)."""
    if not all(name in sys.modules for name in SDK_MODULES):
        await asyncio.to_thread(lambda: [importlib.import_module(name) for name in SDK_MODULES])


def result_text(result: mcp_types.CallToolResult) -> str:
    """A tool result as text: its text parts joined, else its structured content as JSON."""
    from mcp import types as mcp_types  # noqa: PLC0415 - see the imports

    parts = []
    for item in result.content:
        if isinstance(item, mcp_types.TextContent):
            parts.append(item.text)
        else:
            parts.append(json.dumps(item.model_dump(mode="json", exclude_none=True)))
    if not parts and result.structuredContent is not None:
        return json.dumps(result.structuredContent)
    return "\n".join(parts)


class McpServer:
    """The MCP server of one tool entry, with its open session."""

    def __init__(
        self,
        entry: ToolConfig,
        *,
        connect_timeout_seconds: float,
        egress: EgressGuard | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.entry = entry
        self._egress = egress or EgressGuard()
        # The verifying TLS context of unguarded clients, shared by the shelf's servers:
        # httpx builds a new one per client otherwise, loading every CA root on the event
        # loop (~25 ms each; 22 servers retried at once stalled the loop for 0.55 s).
        self._tls = tls
        self._connect_timeout = connect_timeout_seconds
        self._task: asyncio.Task[None] | None = None
        self._session: ClientSession | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self.definitions: list[ToolDefinition] = []
        # Per tool, by the name the model sees: whether its calls may be repeated.
        self.repeatable: dict[str, Repeatable] = {}

    @property
    def connected(self) -> bool:
        return self._session is not None and self._task is not None and not self._task.done()

    async def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = await asyncio.to_thread(httpx.create_ssl_context)
        return self._tls

    @asynccontextmanager
    async def _streams(self) -> AsyncIterator[tuple[Any, Any]]:
        from mcp import StdioServerParameters  # noqa: PLC0415 - see the imports
        from mcp.client.sse import sse_client  # noqa: PLC0415
        from mcp.client.stdio import stdio_client  # noqa: PLC0415
        from mcp.client.streamable_http import streamable_http_client  # noqa: PLC0415

        entry = self.entry
        if entry.url:
            headers = {
                name: expand(value, f"tool {entry.name!r} header {name}") for name, value in entry.headers.items()
            }
            url, guarded = expand(entry.url, f"tool {entry.name!r} url"), bool(_REFERENCE.search(entry.url))
            if guarded:
                split_url(url)  # no userinfo, http(s) only; the address is checked on connecting
            # The transport follows the expanded URL (a `${VAR}` hides its /sse ending).
            sse = entry.transport == "sse" or (entry.transport is None and url.rstrip("/").endswith("/sse"))
            if guarded:  # a no-op once loaded: the catalog loads the roots at start
                await self._egress.load_tls()
            tls = None if guarded else await self._tls_context()
            if sse:
                factory = self._guarded_factory if tls is None else partial(_client, tls)
                async with sse_client(
                    url, headers=headers, timeout=self._connect_timeout, httpx_client_factory=factory
                ) as (read, write):
                    yield read, write
                return
            timeout = httpx.Timeout(entry.timeout_seconds + 5, connect=self._connect_timeout)
            async with (
                (
                    self._egress.client(headers=headers, timeout=timeout)
                    if tls is None
                    else _client(tls, headers=headers, timeout=timeout)
                ) as client,
                streamable_http_client(url, http_client=client) as (read, write, _),
            ):
                yield read, write
            return
        argv = entry.argv
        env = {name: expand(value, f"tool {entry.name!r} env {name}") for name, value in entry.env.items()}
        parameters = StdioServerParameters(command=argv[0], args=argv[1:], env=env or None)
        async with stdio_client(parameters) as (read, write):
            yield read, write

    def _guarded_factory(
        self,
        headers: dict[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        auth: httpx.Auth | None = None,
    ) -> httpx.AsyncClient:
        """An httpx client for the SDK's SSE transport, through the egress guard."""
        return self._egress.client(headers=headers, timeout=timeout or httpx.Timeout(30.0, read=300.0), auth=auth)

    async def _hold(self, ready: asyncio.Future[ClientSession]) -> None:
        """Open the session, hand it over, and keep it open until `close`."""
        from agentrunner.adapters.tools.mcp_annotations import TolerantSession  # noqa: PLC0415 - the SDK's

        try:
            async with self._streams() as (read, write), TolerantSession(read, write) as session:
                await session.initialize()
                ready.set_result(session)
                await self._stop.wait()
        except Exception as exc:  # noqa: BLE001 - a dropped session is reconnected on the next call
            if not ready.done():
                ready.set_exception(DependencyUnavailableError(_error_text(exc)))
            else:
                log.warning("MCP session dropped", tool=self.entry.name, error=_error_text(exc))
        finally:
            self._session = None

    async def connect(self) -> list[ToolDefinition]:
        """Open a session (closing a dead one) and list the server's tools as the model
        sees them. Raises `DependencyUnavailableError` with the reason."""
        async with self._lock:
            if self.connected:
                return self.definitions
            await self._drop()
            self._stop = asyncio.Event()
            ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
            # After a connect timeout nobody awaits `ready` (shield drops its callback), yet the
            # session task may still fail it: mark its error retrieved (the timeout was raised).
            ready.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._task = asyncio.create_task(self._hold(ready), name=f"mcp-{self.entry.name}")
            try:
                session = await asyncio.wait_for(asyncio.shield(ready), self._connect_timeout)
                listed = await asyncio.wait_for(session.list_tools(), self._connect_timeout)
            except TimeoutError as exc:
                await self._drop()
                raise DependencyUnavailableError(f"no answer within {self._connect_timeout:g} s") from exc
            except DependencyUnavailableError:
                await self._drop()
                raise
            except Exception as exc:
                await self._drop()
                raise DependencyUnavailableError(_error_text(exc)) from exc
            self._session = session
            from agentrunner.adapters.tools.mcp_annotations import repeatable_from  # noqa: PLC0415 - the SDK's

            self.definitions = [self._definition(tool) for tool in listed.tools]
            self.repeatable = {
                definition.name: repeatable_from(tool.annotations)
                for definition, tool in zip(self.definitions, listed.tools, strict=True)
            }
            return self.definitions

    def _definition(self, tool: mcp_types.Tool) -> ToolDefinition:
        return ToolDefinition(
            name=f"{self.entry.name}{PREFIX_SEPARATOR}{tool.name}",
            description=tool.description or self.entry.description,
            parameters=tool.inputSchema or {"type": "object", "properties": {}},
        )

    async def call(self, tool: str, arguments: dict[str, Any]) -> str:
        """Call `tool` on the server: over the open session, or a new one when it dropped
        (a call that fails on the session itself is tried once more on a new one). Raises
        `ToolFailedError` when the tool reported an error."""
        for attempt in (1, 2):
            session = self._session if self.connected else None
            if session is None:
                try:
                    await self.connect()
                except DependencyUnavailableError as exc:
                    raise DependencyUnavailableError(
                        f"MCP server {self.entry.name!r} unreachable: {exc.message}"
                    ) from exc
                session = self._session
                assert session is not None
            try:
                result = await self._call_on(session, tool, arguments)
            except Exception as exc:
                log.warning(
                    "MCP call failed on its session, reconnecting", tool=self.entry.name, error=_error_text(exc)
                )
                async with self._lock:
                    if self._session is session:
                        await self._drop()
                if attempt == 2:
                    raise DependencyUnavailableError(f"MCP server {self.entry.name!r}: {_error_text(exc)}") from exc
                continue
            if result.isError:
                raise ToolFailedError(result_text(result) or "the tool reported an error")
            return result_text(result)
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _call_on(self, session: ClientSession, tool: str, arguments: dict[str, Any]) -> Any:
        """`session.call_tool`, failing as soon as the session's task ends: a request in
        flight when the transport drops is otherwise never answered."""
        holder = self._task
        assert holder is not None
        call = asyncio.ensure_future(session.call_tool(tool, arguments))
        try:
            await asyncio.wait({call, holder}, return_when=asyncio.FIRST_COMPLETED)
            if not call.done():
                raise ConnectionError("the session to the MCP server dropped during the call")
            return call.result()
        finally:
            if not call.done():
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await call

    async def _drop(self) -> None:
        """End the session task (politely, then by cancelling it)."""
        task, self._task, self._session = self._task, None, None
        if task is None:
            return
        self._stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(task), 5.0)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def close(self) -> None:
        """Close the session."""
        async with self._lock:
            await self._drop()


class McpTool:
    """One tool of an MCP server, as the agent loop calls it."""

    def __init__(self, server: McpServer, definition: ToolDefinition) -> None:
        self._server = server
        self._definition = definition
        self._repeatable = server.repeatable.get(definition.name, Repeatable.NEVER)
        self._remote_name = definition.name.removeprefix(f"{server.entry.name}{PREFIX_SEPARATOR}")

    @property
    def definition(self) -> ToolDefinition:
        return self._definition

    @property
    def timeout_seconds(self) -> float:
        return self._server.entry.timeout_seconds

    @property
    def repeatable(self) -> Repeatable:
        """From the server's annotations when the tools were listed (`repeatable_from`)."""
        return self._repeatable

    def repeatable_call(self, arguments: dict[str, Any]) -> bool:
        return self._repeatable is Repeatable.ALWAYS

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> str:
        return await self._server.call(self._remote_name, arguments)
