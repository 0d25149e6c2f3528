"""Conversions between domain models and table rows."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Any

from agentrunner.domain.errors import BadRequestError
from agentrunner.domain.event import DeadLetter, Event, StoredDeadLetter
from agentrunner.domain.execution import (
    Execution,
    ExecutionError,
    ExecutionStatus,
    FailedCheck,
    ReplayOf,
    ToolCallRecord,
    Usage,
)
from agentrunner.domain.state import AgentState
from agentrunner.domain.tool_gates import PendingToolCall


def execution_values(execution: Execution) -> dict[str, Any]:
    """Column values of an execution row."""
    return {
        "execution_id": execution.execution_id,
        "agent": execution.agent,
        "status": execution.status.value,
        "input": execution.input,
        "session_id": execution.session_id,
        "output": execution.output,
        "output_json": execution.output_json,
        "error": execution.error.model_dump() if execution.error else None,
        "input_tokens": execution.usage.input_tokens,
        "output_tokens": execution.usage.output_tokens,
        "cost_usd": execution.cost_usd,
        "attempts": execution.attempts,
        "provider": execution.provider,
        "model": execution.model,
        "worker": execution.worker,
        "schedule_id": execution.schedule_id,
        "webhook_url": execution.webhook_url,
        "tenant": execution.tenant,
        "origin": execution.origin,
        "chain_depth": execution.chain_depth,
        "replay_of": execution.replay_of.model_dump() if execution.replay_of else None,
        "agent_version": execution.agent_version,
        "failed_checks": [failed.model_dump(mode="json") for failed in execution.failed_checks] or None,
        "tool_calls": [call.model_dump(mode="json") for call in execution.tool_calls] or None,
        "pending_tool_call": (
            execution.pending_tool_call.model_dump(mode="json") if execution.pending_tool_call else None
        ),
        "trace_id": execution.trace_id,
        "created_at": execution.created_at,
        "started_at": execution.started_at,
        "finished_at": execution.finished_at,
    }


def execution_from(row: Any) -> Execution:
    """The execution an `executions` row holds."""
    return Execution(
        execution_id=row.execution_id,
        agent=row.agent,
        status=ExecutionStatus(row.status),
        input=row.input,
        session_id=row.session_id,
        output=row.output,
        output_json=row.output_json,
        error=ExecutionError.model_validate(row.error) if row.error else None,
        usage=Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens),
        cost_usd=row.cost_usd,
        attempts=row.attempts,
        provider=row.provider,
        model=row.model,
        worker=row.worker,
        schedule_id=row.schedule_id,
        webhook_url=row.webhook_url,
        tenant=row.tenant,
        origin=row.origin,
        chain_depth=row.chain_depth or 0,
        replay_of=ReplayOf.model_validate(row.replay_of) if row.replay_of else None,
        agent_version=row.agent_version,
        failed_checks=[FailedCheck.model_validate(failed) for failed in row.failed_checks or ()],
        tool_calls=[ToolCallRecord.model_validate(call) for call in row.tool_calls or ()],
        pending_tool_call=PendingToolCall.model_validate(row.pending_tool_call) if row.pending_tool_call else None,
        trace_id=row.trace_id,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def state_from(row: Any) -> AgentState:
    """The agent state an `agent_state` row holds."""
    payload = row.payload or {}
    return AgentState(
        agent=row.agent,
        session_id=row.session_id,
        tenant=row.tenant or None,
        history=payload.get("history", []),
        memory=payload.get("memory", {}),
        version=row.version,
        updated_at=row.updated_at,
    )


def state_payload(state: AgentState) -> dict[str, Any]:
    """What an agent state row stores in its (possibly compressed) payload."""
    return {"history": state.history, "memory": state.memory}


def encode_cursor(execution: Execution) -> str:
    """An opaque cursor that resumes a listing after `execution`."""
    raw = f"{execution.created_at.isoformat()}|{execution.execution_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, execution_id) a cursor resumes after (raises `BadRequestError`)."""
    problem = BadRequestError(f"invalid cursor {cursor!r}: pass the next_cursor of a previous page")
    try:
        created_text, execution_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        created = datetime.fromisoformat(created_text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise problem from exc
    if created.tzinfo is None:
        raise problem
    return created, execution_id


def dead_letter_id(letter: DeadLetter) -> str:
    """One id per (queue, event): the same event dying in the same queue again replaces
    its record rather than adding one."""
    return hashlib.sha256(f"{letter.queue}\0{letter.event.event_id}".encode()).hexdigest()[:32]


def dead_letter_from(row: Any) -> StoredDeadLetter:
    """The dead letter a `dead_letters` row holds."""
    return StoredDeadLetter(
        id=row.id,
        queue=row.queue,
        topic=row.topic,
        event=Event.model_validate(row.event),
        error=row.error,
        attempts=row.attempts,
        created_at=row.created_at,
        replayed_at=row.replayed_at,
        tenant=row.tenant,
    )


class AttributeRow:
    """A result row whose columns are attributes, as SQLAlchemy's rows are: what the lean
    paths (`SQLEngine._lean_run`, `sqlite_hop`) read, for the same `*_from` functions."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None
