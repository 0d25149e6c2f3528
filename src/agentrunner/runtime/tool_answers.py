"""A human's answer to the tool call an execution waits on (domain/tool_gates.py): saved on
the execution, which is queued again in the same transaction as its invocation (the
outbox), so the answer and the re-run go together or not at all.

One answer per pause: the write is conditional on the execution still waiting
(`save_execution(only_if=...)`), so of two answers given at once one is saved and the
other is refused (`ConflictError`), and an approved call runs once."""

from __future__ import annotations

from collections.abc import Sequence

from agentrunner.domain.errors import ConflictError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.tool_gates import DECISIONS, ToolCallAnswer
from agentrunner.logs import get_logger
from agentrunner.ports.state import ExecutionStore
from agentrunner.runtime.outbox import OutboxRelay
from agentrunner.runtime.topics import invoke_topic

log = get_logger(__name__)

_WAITING = frozenset({ExecutionStatus.WAITING_APPROVAL})


async def answer_tool_call(
    executions: ExecutionStore,
    relay: OutboxRelay,
    execution: Execution,
    answer: ToolCallAnswer,
    *,
    events: Sequence[Event] = (),
) -> Execution:
    """Answer the tool call `execution` waits on, and queue it again: the re-run replays its
    journal up to that call, where `answer` decides it. Returns the execution as queued.
    `events` are recorded and published with the answer, only if it is saved (the Slack
    gateway's: the clicked message marked answered). Raises `ConflictError` when it is not
    waiting (any more), or waits on a question this answer does not answer (an approval for
    an unknown outcome, or the reverse)."""
    pending = execution.pending_tool_call
    if execution.status is not ExecutionStatus.WAITING_APPROVAL or pending is None:
        raise ConflictError(
            f"execution {execution.execution_id} is {execution.status.value}, not waiting for an answer "
            "about a tool call",
            execution_id=execution.execution_id,
        )
    if answer.decision not in DECISIONS[pending.reason]:
        accepted = " or ".join(sorted(decision.value for decision in DECISIONS[pending.reason]))
        raise ConflictError(
            f"execution {execution.execution_id} waits on {pending.reason.value} for tool {pending.tool!r}: "
            f"answer it with {accepted}, not {answer.decision.value}",
            execution_id=execution.execution_id,
        )
    queued = execution.model_copy(
        update={"status": ExecutionStatus.QUEUED, "pending_tool_call": pending.model_copy(update={"answer": answer})}
    )
    invocation = Event(
        topic=invoke_topic(execution.agent),
        payload={"execution_id": execution.execution_id} | ({"tenant": execution.tenant} if execution.tenant else {}),
        trace_id=execution.trace_id,
    )
    try:
        await executions.save_execution(queued, events=[invocation, *events], only_if=_WAITING)
    except ConflictError as exc:
        raise ConflictError(
            f"execution {execution.execution_id} is no longer waiting: it was answered or cancelled meanwhile",
            execution_id=execution.execution_id,
        ) from exc
    log.info(
        "tool call answered, execution queued again",
        execution_id=execution.execution_id,
        tool=pending.tool,
        decision=answer.decision.value,
    )
    await relay.deliver([invocation, *events])
    return queued
