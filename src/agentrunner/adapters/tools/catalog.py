"""The ToolCatalog: each agent's tools from its `tools:` entries — built-in tools by name,
tools of installed packages (the `agentrunner.tools` entry-point group), and the tools of
MCP servers, connected when the agents load. Each tool says whether its calls may be
repeated after a crash; the entry's `idempotent` overrides it (declared.py).

MCP servers that do not answer are tried again with exponential backoff per endpoint
(outages.py), logged once when they stop answering and once when they answer again.
Nothing here blocks the event loop: connects are async, the TLS context every unguarded
client verifies with is built once in a thread, and the entry points of installed packages
(a scan of site-packages) are read in a thread too."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import httpx

from agentrunner.adapters.egress import EgressGuard
from agentrunner.adapters.tools.builtin import BUILTIN_NAMES, builtin_tool
from agentrunner.adapters.tools.declared import declared
from agentrunner.adapters.tools.mcp import McpServer, McpTool, load_sdk
from agentrunner.adapters.tools.outages import Outages
from agentrunner.domain.agent import AgentConfig, ToolConfig
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.domain.reason import Reason
from agentrunner.domain.redaction import mask_arguments, mask_prose, mask_url
from agentrunner.logs import get_logger
from agentrunner.ports.bus import EventBus
from agentrunner.ports.state import SessionStore
from agentrunner.ports.tools import Tool

log = get_logger(__name__)

ENTRY_POINT_GROUP = "agentrunner.tools"


def installed_tools(group: str = ENTRY_POINT_GROUP) -> dict[str, EntryPoint]:
    """Tools that installed packages declare, by entry-point name."""
    return {point.name: point for point in entry_points(group=group)}


def plugin_tool(point: EntryPoint, entry: ToolConfig) -> Tool:
    """The tool an entry point declares: the object it names is a factory called with the
    agent's tool entry (`ToolConfig`), or a `Tool` itself. A tool that does not say whether
    its calls may be repeated (written before tools said it) is never repeated."""
    loaded: Any = point.load()
    tool: Any = loaded if hasattr(loaded, "definition") else loaded(entry)
    if not (hasattr(tool, "definition") and hasattr(tool, "call") and hasattr(tool, "timeout_seconds")):
        raise TypeError(f"entry point {point.value!r} did not give a tool (definition, timeout_seconds, call)")
    if tool.definition.name != entry.name:
        raise TypeError(f"entry point {point.value!r} gave tool {tool.definition.name!r}, expected {entry.name!r}")
    return declared(tool, entry)


def _endpoint(entry: ToolConfig) -> str:
    """Where an MCP entry connects, as logs and reasons show it: credentials masked."""
    return mask_url(entry.url) if entry.url else " ".join(mask_arguments(entry.argv))


class ToolShelf:
    """Tools per agent, MCP sessions kept from one load to the next while their entry is
    unchanged."""

    def __init__(
        self,
        *,
        store: SessionStore,
        bus: EventBus,
        connect_timeout_seconds: float = 5.0,
        retry_first_seconds: float = 1.0,
        retry_max_seconds: float = 300.0,
        group: str = ENTRY_POINT_GROUP,
        egress: EgressGuard | None = None,
    ) -> None:
        self._egress = egress or EgressGuard()
        self._store = store
        self._bus = bus
        self._connect_timeout = connect_timeout_seconds
        self._group = group
        self._servers: dict[tuple[str, str], McpServer] = {}
        self._unreachable: list[McpServer] = []
        self._tools: dict[str, list[Tool]] = {}
        self._tls: ssl.SSLContext | None = None
        self.outages = Outages(first_seconds=retry_first_seconds, max_seconds=retry_max_seconds)
        # Set when the outages change, so that a wait for the next try recomputes its end.
        self._schedule_changed = asyncio.Event()

    async def load(self, agents: Sequence[AgentConfig]) -> dict[str, list[str]]:
        """Build every agent's tools; returns, per agent, why some are missing."""
        wanted: dict[tuple[str, str], ToolConfig] = {
            (config.name, entry.model_dump_json()): entry
            for config in agents
            for entry in config.tools
            if entry.type == "mcp"
        }
        for key in [key for key in self._servers if key not in wanted]:
            await self._servers.pop(key).close()
        remote = [entry for config in agents for entry in config.tools if entry.type == "a2a"]
        if self._tls is None and any(entry.url for entry in [*wanted.values(), *remote]):
            # Loading the CA roots reads files and costs ~25 ms of CPU: once, off the loop.
            self._tls = await asyncio.to_thread(httpx.create_ssl_context)
        if any(
            entry.type in ("mcp", "a2a") or entry.name == "http_request" for config in agents for entry in config.tools
        ):
            await self._egress.load_tls()  # for guarded MCP and A2A URLs and http_request
        if wanted:
            await load_sdk()  # loaded once: a dictionary lookup afterwards
        for key, entry in wanted.items():
            if key not in self._servers:
                self._servers[key] = McpServer(
                    entry, connect_timeout_seconds=self._connect_timeout, egress=self._egress, tls=self._tls
                )
        # A load (start, a reload) tries every server without a session at once, those in
        # an outage too: an operator who reloads has often just started the server.
        failures = await self._connect([server for server in self._servers.values() if not server.connected])
        self._unreachable = [server for server in self._servers.values() if id(server) in failures]
        self.outages.keep_only(_endpoint(server.entry) for server in self._servers.values())
        self._schedule_changed.set()
        plugins = await asyncio.to_thread(installed_tools, self._group)
        reasons: dict[str, list[str]] = {}
        tools: dict[str, list[Tool]] = {}
        for config in agents:
            tools[config.name], reasons[config.name] = self._tools_of(config, failures, plugins)
        self._tools = tools
        return {name: found for name, found in reasons.items() if found}

    async def _connect(self, servers: list[McpServer]) -> dict[int, str]:
        """Connect `servers` at once; the reason of each that failed, by id. Each endpoint's
        outage is opened, extended or closed, and logged when it opens or closes only."""
        results = await asyncio.gather(*(server.connect() for server in servers), return_exceptions=True)
        failures = {}
        for server, result in zip(servers, results, strict=True):
            endpoint = _endpoint(server.entry)
            if not isinstance(result, BaseException):
                ended = self.outages.answered(endpoint)
                if ended is not None:
                    log.info(
                        "MCP server answers again",
                        tool=server.entry.name,
                        endpoint=endpoint,
                        outage_seconds=round(self.outages.seconds_since(ended), 1),
                        tries=ended.tries,
                    )
                continue
            reason = mask_prose(
                result.message if isinstance(result, AgentRunnerError) else f"{type(result).__name__}: {result}"
            )
            failures[id(server)] = reason
            if self.outages.failed(endpoint, reason) is not None:
                log.warning(
                    "MCP server unreachable, trying again with growing waits (up to MCP_RETRY_SECONDS)",
                    tool=server.entry.name,
                    endpoint=endpoint,
                    error=reason,
                )
        self._schedule_changed.set()
        return failures

    def _tools_of(
        self, config: AgentConfig, failures: dict[int, str], plugins: dict[str, EntryPoint]
    ) -> tuple[list[Tool], list[str]]:
        tools: list[Tool] = []
        reasons: list[str] = []
        for entry in config.tools:
            if entry.type == "mcp":
                server = self._servers[(config.name, entry.model_dump_json())]
                if id(server) in failures:
                    reasons.append(
                        Reason(
                            f"tool {entry.name!r}: MCP server {_endpoint(entry)} unreachable ({failures[id(server)]}); "
                            "the agent runs without its tools until it answers "
                            "(tried again with growing waits, up to every MCP_RETRY_SECONDS)",
                            short=f"MCP server {entry.name!r} unreachable",
                        )
                    )
                    continue
                tools.extend(declared(McpTool(server, definition), entry) for definition in server.definitions)
            elif entry.type == "a2a":  # the card is read at the first call (a2a.py)
                # Imported by a process that has an a2a tool only: the SDK and its protobuf
                # types are ~40 ms of start-up and ~8 MB of memory.
                from agentrunner.adapters.tools.a2a import A2aAgentTool  # noqa: PLC0415

                tools.append(declared(A2aAgentTool(entry, egress=self._egress, tls=self._tls), entry))
            elif entry.name in BUILTIN_NAMES:
                tool = builtin_tool(entry, store=self._store, bus=self._bus, egress=self._egress)
                if tool is not None:
                    tools.append(declared(tool, entry))
            elif entry.name in plugins:
                try:
                    tools.append(plugin_tool(plugins[entry.name], entry))
                except Exception as exc:  # noqa: BLE001 - a broken plugin degrades its agents only
                    reasons.append(
                        Reason(
                            f"tool {entry.name!r}: its package failed to load ({type(exc).__name__}: {exc})",
                            short=f"tool {entry.name!r} failed to load",
                        )
                    )
            else:
                known = ", ".join(sorted({*BUILTIN_NAMES, *plugins}))
                reasons.append(
                    Reason(
                        f"tool {entry.name!r} is neither built in nor installed (known: {known})",
                        short=f"tool {entry.name!r} not installed",
                    )
                )
        return tools, reasons

    def tools_for(self, agent: str) -> list[Tool]:
        return list(self._tools.get(agent, []))

    async def until_retry_due(self) -> None:
        """Return when an unreachable server's next try is due (waits while none is)."""
        while True:
            self._schedule_changed.clear()
            try:
                async with asyncio.timeout(self.outages.seconds_to_next()):
                    await self._schedule_changed.wait()
            except TimeoutError:
                return

    async def retry_unreachable(self) -> bool:
        """Try the unreachable servers whose next try is due; True when one answered (load
        the agents again to give its tools to those that use it)."""
        due = set(self.outages.due())
        waiting = [server for server in self._unreachable if _endpoint(server.entry) in due and not server.connected]
        # An endpoint due with no server left to try (dropped by a load meanwhile) is over.
        for endpoint in due - {_endpoint(server.entry) for server in waiting}:
            self.outages.answered(endpoint)
        if not waiting:
            return False
        failures = await self._connect(waiting)
        return len(failures) < len(waiting)

    async def close(self) -> None:
        await asyncio.gather(*(server.close() for server in self._servers.values()))
        self._servers.clear()
        self._tools.clear()
