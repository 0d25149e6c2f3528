"""The ToolCatalog: each agent's tools from its `tools:` entries — built-in tools by name,
tools of installed packages (the `agentrunner.tools` entry-point group), and the tools of
MCP servers, connected when the agents load."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from agentrunner.adapters.egress import EgressGuard
from agentrunner.adapters.tools.builtin import BUILTIN_NAMES, builtin_tool
from agentrunner.adapters.tools.mcp import McpServer, McpTool
from agentrunner.domain.agent import AgentConfig, ToolConfig
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.domain.reason import Reason
from agentrunner.domain.redaction import mask_arguments, mask_prose, mask_url
from agentrunner.logs import get_logger
from agentrunner.ports import EventBus, StateStore, Tool

log = get_logger(__name__)

ENTRY_POINT_GROUP = "agentrunner.tools"


def installed_tools(group: str = ENTRY_POINT_GROUP) -> dict[str, EntryPoint]:
    """Tools that installed packages declare, by entry-point name."""
    return {point.name: point for point in entry_points(group=group)}


def plugin_tool(point: EntryPoint, entry: ToolConfig) -> Tool:
    """The tool an entry point declares: the object it names is a factory called with the
    agent's tool entry (`ToolConfig`), or a `Tool` itself."""
    loaded: Any = point.load()
    tool: Any = loaded if hasattr(loaded, "definition") else loaded(entry)
    if not (hasattr(tool, "definition") and hasattr(tool, "call") and hasattr(tool, "timeout_seconds")):
        raise TypeError(f"entry point {point.value!r} did not give a tool (definition, timeout_seconds, call)")
    if tool.definition.name != entry.name:
        raise TypeError(f"entry point {point.value!r} gave tool {tool.definition.name!r}, expected {entry.name!r}")
    return tool  # type: ignore[no-any-return]


def _endpoint(entry: ToolConfig) -> str:
    """Where an MCP entry connects, as logs and reasons show it: credentials masked."""
    return mask_url(entry.url) if entry.url else " ".join(mask_arguments(entry.argv))


class ToolShelf:
    """Tools per agent, MCP sessions kept from one load to the next while their entry is
    unchanged."""

    def __init__(
        self,
        *,
        store: StateStore,
        bus: EventBus,
        connect_timeout_seconds: float = 5.0,
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
        for key, entry in wanted.items():
            if key not in self._servers:
                self._servers[key] = McpServer(
                    entry, connect_timeout_seconds=self._connect_timeout, egress=self._egress
                )
        failures = await self._connect([server for server in self._servers.values() if not server.connected])
        self._unreachable = [server for server in self._servers.values() if id(server) in failures]
        plugins = installed_tools(self._group)
        reasons: dict[str, list[str]] = {}
        tools: dict[str, list[Tool]] = {}
        for config in agents:
            tools[config.name], reasons[config.name] = self._tools_of(config, failures, plugins)
        self._tools = tools
        return {name: found for name, found in reasons.items() if found}

    async def _connect(self, servers: list[McpServer]) -> dict[int, str]:
        """Connect `servers` at once; the reason of each that failed, by id."""
        results = await asyncio.gather(*(server.connect() for server in servers), return_exceptions=True)
        failures = {}
        for server, result in zip(servers, results, strict=True):
            if isinstance(result, BaseException):
                reason = mask_prose(
                    result.message if isinstance(result, AgentRunnerError) else f"{type(result).__name__}: {result}"
                )
                failures[id(server)] = reason
                log.warning(
                    "MCP server unreachable", tool=server.entry.name, endpoint=_endpoint(server.entry), error=reason
                )
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
                            "the agent runs without its tools until it answers (tried again every MCP_RETRY_SECONDS)",
                            short=f"MCP server {entry.name!r} unreachable",
                        )
                    )
                    continue
                tools.extend(McpTool(server, definition) for definition in server.definitions)
            elif entry.name in BUILTIN_NAMES:
                tool = builtin_tool(entry, store=self._store, bus=self._bus, egress=self._egress)
                if tool is not None:
                    tools.append(tool)
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

    async def retry_unreachable(self) -> bool:
        waiting = [server for server in self._unreachable if not server.connected]
        if not waiting:
            return False
        failures = await self._connect(waiting)
        return len(failures) < len(waiting)

    async def close(self) -> None:
        await asyncio.gather(*(server.close() for server in self._servers.values()))
        self._servers.clear()
        self._tools.clear()
