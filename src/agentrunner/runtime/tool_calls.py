"""Running the tool calls of one model answer: independent calls at once, each validated
against its schema, bounded in time and in size, and recorded; a failure is a result the
model reads ("error: ..."), never an exception of the run."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from agentrunner.domain.errors import AgentRunnerError
from agentrunner.domain.execution import ToolCallRecord, utcnow
from agentrunner.domain.llm import Message, ToolCall
from agentrunner.logs import get_logger
from agentrunner.ports.tools import Tool, ToolContext

if TYPE_CHECKING:  # the journal runs tool calls through this module
    from agentrunner.runtime.journal import RunJournal

log = get_logger(__name__)

ToolSink = Callable[[ToolCallRecord], Awaitable[None]]

# An error message the model reads stays short: it has to act on it, not debug it.
ERROR_MAX_CHARS = 500


def truncation_marker(shown: int, total: int) -> str:
    """What ends a result cut to `shown` of its `total` characters."""
    return f"\n[truncated by agentrunner: {shown} of {total} characters shown]"


def capped(text: str, max_chars: int) -> str:
    """`text`, cut to `max_chars` characters with a marker saying so."""
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + truncation_marker(max_chars, len(text))


def schema_problem(schema: Mapping[str, Any], arguments: dict[str, Any]) -> str | None:
    """Why `arguments` do not follow `schema` (the first problems found), or None."""
    try:
        validator = validator_for(schema)(schema)
        problems = sorted(validator.iter_errors(arguments), key=lambda error: list(error.path))
    except SchemaError as exc:  # the tool's own schema is broken: call it unchecked
        log.warning("tool schema invalid, arguments not checked", error=exc.message)
        return None
    if not problems:
        return None
    return "; ".join(
        f"{'.'.join(str(part) for part in error.path) or 'arguments'}: {error.message}" for error in problems[:3]
    )


def _describe(exc: Exception) -> str:
    if isinstance(exc, AgentRunnerError):
        return exc.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass
class ToolBudget:
    """The tool calls an execution may still make (`max_tool_calls`)."""

    left: int


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """A finished call: the message for the model, and the record for the execution."""

    message: Message
    record: ToolCallRecord


async def _outcome(
    call: ToolCall,
    tool: Tool | None,
    context: ToolContext,
    *,
    allowed: bool,
    iteration: int,
    max_chars: int,
) -> ToolOutcome:
    started_at, started = utcnow(), time.perf_counter()
    result: str | None = None
    error: str | None = None
    if tool is None:
        error = f"unknown tool {call.name!r}"
    elif not allowed:
        error = "tool call limit of this execution reached (max_tool_calls): answer with what you have"
    elif problem := schema_problem(tool.definition.parameters, call.arguments):
        error = f"invalid arguments: {problem}"
    else:
        try:
            answer = await asyncio.wait_for(tool.call(call.arguments, context), tool.timeout_seconds)
            result = capped(result_text(answer), max_chars)
        except TimeoutError:
            error = f"timed out after {tool.timeout_seconds:g} s"
        except Exception as exc:  # noqa: BLE001 - every tool failure is the model's to handle
            error = _describe(exc)
    if error is not None:
        error = capped(error, ERROR_MAX_CHARS)
        log.info("tool call failed", tool=call.name, execution_id=context.execution_id, error=error)
    record = ToolCallRecord(
        call_id=call.id,
        name=call.name,
        arguments=call.arguments,
        result=result,
        error=error,
        iteration=iteration,
        started_at=started_at,
        finished_at=utcnow(),
        duration_ms=(time.perf_counter() - started) * 1000,
    )
    return ToolOutcome(outcome_message(call, record), record)


def outcome_message(call: ToolCall, record: ToolCallRecord) -> Message:
    """The tool message the model reads for `call`, which ended as `record` says."""
    content = f"error: {record.error}" if record.error is not None else (record.result or "")
    return Message(role="tool", content=content, tool_call_id=call.id, is_error=record.error is not None)


async def run_tool_calls(
    calls: Sequence[ToolCall],
    tools: Mapping[str, Tool],
    context: ToolContext,
    *,
    budget: ToolBudget,
    iteration: int,
    max_chars: int,
    on_tool_call: ToolSink | None = None,
    journal: RunJournal | None = None,
) -> list[Message]:
    """Run `calls` concurrently (they are independent: the model asked for them together)
    and return one tool message per call, in the order of `calls`. Calls past the budget,
    of unknown tools, or with arguments their schema refuses are answered with an error
    and not run. Each record goes to `on_tool_call` as its call ends. With `journal`, each
    call is a step of it (seqs in the order of `calls`): one it recorded is replayed, not run."""
    first_seq = journal.reserve(len(calls)) if journal is not None else 0

    async def one(index: int, call: ToolCall, allowed: bool) -> Message:
        def run() -> Awaitable[ToolOutcome]:
            return _outcome(
                call, tools.get(call.name), context, allowed=allowed, iteration=iteration, max_chars=max_chars
            )

        outcome = await (journal.tool_call(first_seq + index, call, run) if journal is not None else run())
        if on_tool_call is not None:
            await on_tool_call(outcome.record)
        return outcome.message

    allowed = []
    for _ in calls:
        allowed.append(budget.left > 0)
        budget.left -= 1
    budget.left = max(budget.left, 0)
    return list(
        await asyncio.gather(*(one(i, call, ok) for i, (call, ok) in enumerate(zip(calls, allowed, strict=True))))
    )


def result_text(value: Any) -> str:
    """A tool's return value as the model reads it: text as is, anything else as JSON
    (raises `TypeError` for a value JSON cannot hold)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=_refuse)


def _refuse(value: Any) -> Any:
    raise TypeError(f"the tool returned a {type(value).__name__}, which is not JSON")
