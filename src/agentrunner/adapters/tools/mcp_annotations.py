"""What an MCP server says of its tools' behaviour (the spec's ToolAnnotations), read as
hints from a party we do not control: whether a tool's calls may be repeated after a crash
left their outcome unknown (`repeatable_from`), and a client session whose tools/list
answer survives malformed annotations (`TolerantSession`).

The SDK reads annotations in pydantic's lax mode: a hint sent as "true" or 1 becomes true,
and one sent as an object or a list fails the whole answer, so one bad field would cost the
agent every tool of the server. Here each hint counts only when it is a JSON boolean;
anything else is dropped, and a tool without hints is never repeated."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from mcp import ClientSession
from mcp import types as mcp_types
from pydantic import BaseModel, BeforeValidator

from agentrunner.ports.tools import Repeatable

# The annotations that say whether a call may be repeated; others (title, openWorldHint,
# anything a server adds) are not read, so not kept.
_REPEAT_HINTS = ("readOnlyHint", "destructiveHint", "idempotentHint")


def _hints_only(value: object) -> object:
    """A tool's annotations as the server sent them, reduced to the hints that are JSON
    booleans: anything else (a string "true", a number, an object, a megabyte of text) is
    dropped, where the SDK would coerce it to a hint or refuse the server's whole list."""
    if not isinstance(value, dict):
        return None
    return {name: value[name] for name in _REPEAT_HINTS if isinstance(value.get(name), bool)}


class ListedTool(mcp_types.Tool):
    """A tool of a tools/list answer, its annotations reduced to well-formed hints."""

    annotations: Annotated[mcp_types.ToolAnnotations | None, BeforeValidator(_hints_only)] = None


class ListToolsResult(mcp_types.ListToolsResult):
    """A tools/list answer whose tools' annotations cannot fail it."""

    tools: list[ListedTool]  # type: ignore[assignment]


_Result = TypeVar("_Result", bound=BaseModel)


class TolerantSession(ClientSession):
    """The SDK's client session, reading tools/list answers with `ListToolsResult`: its
    `list_tools` (called at connect, and again by `call_tool` for a tool it has not seen)
    keeps working for a server whose annotations are malformed."""

    async def send_request(
        self, request: mcp_types.ClientRequest, result_type: type[_Result], *args: Any, **kwargs: Any
    ) -> _Result:
        # The rest passed on as given: options the SDK adds to requests keep working.
        if result_type is mcp_types.ListToolsResult:
            result_type = ListToolsResult  # type: ignore[assignment]
        return await super().send_request(request, result_type, *args, **kwargs)


def repeatable_from(annotations: mcp_types.ToolAnnotations | None) -> Repeatable:
    """Whether an MCP tool's calls may be repeated, by the spec's ToolAnnotations:
    `readOnlyHint: true` (it does not modify its environment) or `idempotentHint: true`
    (calling it again with the same arguments has no additional effect) make them
    repeatable. Anything else is not: the spec's defaults (readOnlyHint false,
    idempotentHint false, destructiveHint true) assume the worst, a tool without
    annotations says nothing, and `destructiveHint` alone (additive or destructive)
    tells nothing about a second call."""
    if annotations is not None and (annotations.readOnlyHint is True or annotations.idempotentHint is True):
        return Repeatable.ALWAYS
    return Repeatable.NEVER
