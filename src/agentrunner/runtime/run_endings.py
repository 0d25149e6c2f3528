"""How an agent pool records where an execution's run stopped: its end, or its pause.

An end is saved with its announcements (`execution.finished.<agent>`, and on success
`agent.output.<agent>`, the next link of a chain) in one transaction, then published by
the relay: a worker killed in between leaves them in the outbox, whose sweep publishes
them. A pause (the run waits for a human before a tool call) is saved with
`execution.waiting.<agent>` the same way (the slack role posts the call with its buttons
from it), never with `execution.finished`: the execution has not ended.

Both writes are conditional on the execution being unfinished (queued or running): the
end a run reaches late (a schedule's timeout after its grace, the watchdog giving up on a
stuck consumer, a cancel) loses to the one recorded first, and is neither recorded nor
announced a second time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.checks import checked
from agentrunner.domain.errors import AgentRunnerError, ConflictError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionError, ExecutionStatus, utcnow
from agentrunner.domain.steps import Step
from agentrunner.logs import get_logger
from agentrunner.ports.metrics import Metrics
from agentrunner.ports.state import ExecutionStore
from agentrunner.runtime.agent_run import COLLABORATION_KEY
from agentrunner.runtime.chains import output_event
from agentrunner.runtime.outbox import OutboxRelay
from agentrunner.runtime.registry import AgentRegistry
from agentrunner.runtime.topics import finished_topic, waiting_topic

log = get_logger(__name__)

_UNFINISHED = frozenset({ExecutionStatus.QUEUED, ExecutionStatus.RUNNING})

# Tells the watchers of an execution (`GET /executions/{id}/events`) how it goes; best effort.
Progress = Callable[[Execution, dict[str, Any]], Awaitable[None]]


class RunEndings:
    """Records the end or the pause of the executions an agent pool runs, once each."""

    def __init__(
        self,
        *,
        executions: ExecutionStore,
        relay: OutboxRelay,
        registry: AgentRegistry,
        progress: Progress,
        metrics: Metrics | None = None,
    ) -> None:
        self._executions = executions
        self._relay = relay
        self._registry = registry
        self._progress = progress
        self._metrics = metrics

    async def complete(
        self, finished: Execution, *, steps: Sequence[Step] = (), config: AgentConfig | None = None
    ) -> None:
        """Save the terminal execution with its announcements in one transaction, then
        publish them: `execution.finished.<agent>`, and `agent.output.<agent>` on success
        (the next link of its chain, from the execution's recorded depth: a step of a
        collaborative run goes on from the run's depth, though its invocation carries none).
        `steps`, the journal's steps its run held back (its last answer), are written in
        that transaction too.

        Only over an unfinished execution: one that ended elsewhere meanwhile (the schedule
        watch's timeout after its grace, the watchdog giving up on a stuck consumer, a cancel)
        keeps that end, and this late result is neither recorded nor announced a second time.

        With `config`, the config it ran on, a success is checked first against its online
        `checks` (domain/checks.py): what they found is part of the end, saved in the same
        write, and counted only once that write succeeded (a redelivered end, refused as
        ended, counts nothing); one that fails them under `on_check_failure: fail` ends failed
        and announces no output."""
        if config is not None:
            finished = checked(finished, config.checks, config.on_check_failure)
        events = [
            Event(
                topic=finished_topic(finished.agent),
                payload={
                    "execution_id": finished.execution_id,
                    "status": finished.status.value,
                    "execution": finished.model_dump(mode="json"),  # callers that wait need no read
                },
                trace_id=finished.trace_id,
            )
        ]
        if finished.status is ExecutionStatus.SUCCEEDED:
            events.append(output_event(finished))
        try:
            await self._executions.save_execution(finished, events=events, only_if=_UNFINISHED, steps=steps)
        except ConflictError as exc:
            log.warning(
                "execution ended elsewhere while it ran, its result not recorded",
                execution_id=finished.execution_id,
                agent=finished.agent,
                result=finished.status.value,
                reason=exc.message,
            )
            return
        if self._metrics is not None:
            registered = self._registry.agents.get(finished.agent)
            mode = registered.config.execution_mode.value if registered and registered.config else "unknown"
            self._metrics.execution_finished(finished, mode)
        log.info(
            "execution finished",
            execution_id=finished.execution_id,
            agent=finished.agent,
            status=finished.status.value,
            input_tokens=finished.usage.input_tokens,
            output_tokens=finished.usage.output_tokens,
        )
        await self._relay.deliver(events)

    async def pause(self, paused: Execution) -> None:
        """Record that `paused` waits for a human before a tool call, with its announcement
        `execution.waiting.<agent>` in the same transaction (then published by the relay, as
        `complete`'s). It holds no worker: an answer queues it again (runtime/tool_answers.py).
        Only over an unfinished execution, as `complete`."""
        pending = paused.pending_tool_call
        waiting = Event(
            topic=waiting_topic(paused.agent),
            payload={
                "execution_id": paused.execution_id,
                "pending_tool_call": pending.model_dump(mode="json") if pending else None,
                # A hint that spares the slack role a read for the others; it reads the record.
                # (a collaborative step may be: its run's origin says; the slack role reads it)
                "from_slack": paused.slack_origin is not None or COLLABORATION_KEY in paused.input,
            },
            trace_id=paused.trace_id,
        )
        try:
            await self._executions.save_execution(paused, events=[waiting], only_if=_UNFINISHED)
        except ConflictError as exc:
            log.warning(
                "execution ended elsewhere while it ran, its pause not recorded",
                execution_id=paused.execution_id,
                reason=exc.message,
            )
            return
        log.info(
            "execution waits for a human before a tool call",
            execution_id=paused.execution_id,
            agent=paused.agent,
            reason=pending.reason.value if pending else None,
            tool=pending.tool if pending else None,
        )
        await self._progress(
            paused,
            {
                "kind": "status",
                "status": ExecutionStatus.WAITING_APPROVAL.value,
                "pending_tool_call": pending.model_dump(mode="json") if pending else None,
            },
        )
        await self._relay.deliver([waiting])


def ended(execution: Execution, status: ExecutionStatus, error: AgentRunnerError | None = None) -> Execution:
    """`execution` ended now with `status`, and `error` recorded as its error (or none)."""
    return execution.model_copy(
        update={
            "status": status,
            "finished_at": utcnow(),
            "error": ExecutionError(code=error.code, message=error.message) if error else None,
        }
    )


def unexpected(exc: Exception, execution: Execution) -> AgentRunnerError:
    """The error recorded for an exception outside our hierarchy (a bug, or a library's
    error nothing translated): logged here with its trace, as it carries no code."""
    log.exception("unexpected error in agent run", execution_id=execution.execution_id, agent=execution.agent)
    return AgentRunnerError(f"unexpected {type(exc).__name__}: {exc}", execution_id=execution.execution_id)
