"""The tool ports: one tool an agent may call, and the catalogue of every agent's tools."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.execution import Execution
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

    @classmethod
    def serving(cls, execution: Execution, *, session_id: str | None) -> ToolContext:
        """The context of the tools `execution` calls (in session `session_id`)."""
        return cls(
            agent=execution.agent,
            execution_id=execution.execution_id,
            session_id=session_id,
            trace_id=execution.trace_id,
            tenant=execution.tenant,
            chain_depth=execution.chain_depth,
        )


class Repeatable(StrEnum):
    """Whether the calls of a tool may be made again when a crash left their outcome
    unknown (the call started, nothing recorded what it did).

    The rule: a call may be repeated when a second call has no effect the first one did not
    already have: it only reads (the built-in `current_time`, `get_state`, an `http_request`
    GET or HEAD, an MCP tool annotated `readOnlyHint`), or it is idempotent (an MCP tool
    annotated `idempotentHint`). Anything else may act twice (an email sent twice, a payment
    made twice) and is never repeated blindly. An agent's tool entry overrides what the
    tool says (`idempotent: true|false`).
    """

    # Every call may be repeated.
    ALWAYS = "always"
    # No call may be repeated (and a tool that says nothing is this).
    NEVER = "never"
    # It depends on the call's arguments (`http_request` allowing methods beyond GET and
    # HEAD: its GET and HEAD calls only): ask `Tool.repeatable_call`.
    PER_CALL = "per_call"


class Tool(Protocol):
    """One tool an agent may call (built in, installed through the `agentrunner.tools`
    entry points, or served by an MCP server).

    Contract: `call` gets arguments already valid against `definition.parameters` and
    returns the result as text (JSON for structured results); any exception it raises
    becomes an error result for the model, never a failed run. The agent loop cuts a call
    short after `timeout_seconds`. Every tool says whether a call may be made again after a
    crash left its outcome unknown, in two members: `repeatable`, its declaration (what
    the agent's description shows), and `repeatable_call(arguments)`, the decision for one
    call (what the loop asks). Two, because one tool decides per call (`http_request`: a
    GET may be repeated, a POST may not), and a description cannot show a function. The
    catalog applies the agent file's `idempotent` override before a consumer sees a tool.
    """

    @property
    def definition(self) -> ToolDefinition:
        """The name, description and argument schema offered to the model."""
        ...

    @property
    def timeout_seconds(self) -> float:
        """How long one call may take."""
        ...

    @property
    def repeatable(self) -> Repeatable:
        """Whether its calls may be made again after a crash left their outcome unknown
        (the rule: `Repeatable`): what the agent's description shows."""
        ...

    def repeatable_call(self, arguments: dict[str, Any]) -> bool:
        """Whether this call, with these `arguments`, may be made again after a crash left
        its outcome unknown: what the agent loop asks before running a call a second time.

        Contract: True for every call when `repeatable` is ALWAYS, False for every call when
        it is NEVER, decided from `arguments` when it is PER_CALL. Never raises, whatever
        `arguments` hold (they come from the model): a call it cannot judge is not
        repeatable."""
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
