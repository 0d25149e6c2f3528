"""Whether a tool's calls may be repeated, when the tool's own word is not the last one: the
agent file's `idempotent: true|false` on the entry overrides it, and a tool of an installed
package written before tools declared it (no `repeatable`) is never repeated.

The override wraps the tool rather than changing it: the tool keeps its definition, timeout
and calls, and nothing it says (a hostile MCP server's annotations included) can make a call
repeatable that the operator's file says is not."""

from __future__ import annotations

from typing import Any

from agentrunner.domain.agent import ToolConfig
from agentrunner.domain.llm import ToolDefinition
from agentrunner.ports.tools import Repeatable, Tool, ToolContext


class DeclaredTool:
    """A tool whose calls are all repeatable, or none, whatever the tool says of itself."""

    def __init__(self, inner: Any, *, repeatable: bool) -> None:
        # `Any`: the inner tool may predate `repeatable` (a plugin): only its definition,
        # timeout and call are used.
        self._inner = inner
        self._repeatable = Repeatable.ALWAYS if repeatable else Repeatable.NEVER

    @property
    def definition(self) -> ToolDefinition:
        definition: ToolDefinition = self._inner.definition
        return definition

    @property
    def timeout_seconds(self) -> float:
        return float(self._inner.timeout_seconds)

    @property
    def repeatable(self) -> Repeatable:
        return self._repeatable

    def repeatable_call(self, arguments: dict[str, Any]) -> bool:
        return self._repeatable is Repeatable.ALWAYS

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> str:
        result: str = await self._inner.call(arguments, context)
        return result


def declared(tool: Any, entry: ToolConfig) -> Tool:
    """`tool` as the agent's `entry` declares it: overridden when the entry says
    `idempotent`, never repeatable when the tool does not say (a plugin of an older
    interface), else as it is."""
    if entry.idempotent is not None:
        return DeclaredTool(tool, repeatable=entry.idempotent)
    if not (
        isinstance(getattr(tool, "repeatable", None), Repeatable) and callable(getattr(tool, "repeatable_call", None))
    ):
        return DeclaredTool(tool, repeatable=False)
    result: Tool = tool
    return result
