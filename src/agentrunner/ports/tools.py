"""The tool ports: one tool an agent may call, and the catalogue of every agent's tools."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.llm import ToolDefinition


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who calls a tool: the execution it serves (tools that keep state or publish read it)."""

    agent: str
    execution_id: str
    session_id: str | None
    trace_id: str
    # The tenant the execution counts for and its depth in a chain: what a tool that
    # starts more work (`publish_event`) hands on, so the chain keeps both.
    tenant: str | None = None
    chain_depth: int = 0


class Tool(Protocol):
    """One tool an agent may call (built in, installed through the `agentrunner.tools`
    entry points, or served by an MCP server).

    Contract: `call` gets arguments already valid against `definition.parameters` and
    returns the result as text (JSON for structured results); any exception it raises
    becomes an error result for the model, never a failed run. The agent loop cuts a call
    short after `timeout_seconds`.
    """

    @property
    def definition(self) -> ToolDefinition:
        """The name, description and argument schema offered to the model."""
        ...

    @property
    def timeout_seconds(self) -> float:
        """How long one call may take."""
        ...

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> str:
        """Run the tool once and return its result."""
        ...


class ToolCatalog(Protocol):
    """The tools of every agent: built-in and installed tools by name, MCP servers connected.

    Contract: `load` never raises for a tool that cannot be had (an unreachable server, an
    unknown name): it reports it as a reason, and the agent runs without those tools.
    MCP sessions are kept across executions and reconnected when they drop.
    """

    async def load(self, agents: Sequence[AgentConfig]) -> dict[str, list[str]]:
        """Connect and list the tools of `agents` (sessions of unchanged entries kept, those
        of removed ones closed); returns, per agent name, why some of its tools are missing."""
        ...

    def tools_for(self, agent: str) -> list[Tool]:
        """The tools `agent` offers to its model now (empty when it has none)."""
        ...

    async def retry_unreachable(self) -> bool:
        """Try again the MCP servers the last `load` could not reach; True when one now
        answers (load again to offer its tools)."""
        ...

    async def close(self) -> None:
        """Close every MCP session."""
        ...
