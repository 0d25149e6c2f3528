"""Clients following executions as they happen (`GET /executions/{id}/events`) on this
node: each gets the execution's status, its steps from the journal and the text of a model
step under way, with ids that survive a reconnect and a worker's crash
(`runtime/execution_stream.py`). The orchestrator wakes them when a progress event or the
end of an execution they follow reaches its queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from agentrunner.domain.errors import AgentRunnerError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution
from agentrunner.domain.steps import Step
from agentrunner.ports.bus import EventBus
from agentrunner.ports.state import ExecutionStore
from agentrunner.runtime.execution_stream import StreamCursor, StreamPosition, stream_end
from agentrunner.runtime.topics import progress_pattern


class ExecutionWatchers:
    """The watchers of this node, by execution. `queue` is the node's own (exclusive)
    queue, bound to an execution's progress while somebody follows it; `steps` reads an
    execution's journal (empty without one: `journaled` false, tool calls then come from the
    progress events themselves)."""

    def __init__(
        self,
        *,
        bus: EventBus,
        queue: str,
        executions: ExecutionStore,
        steps: Callable[[Execution], Awaitable[list[Step]]],
        journaled: bool,
    ) -> None:
        self._bus = bus
        self._queue = queue
        self._executions = executions
        self._steps = steps
        self._journaled = journaled
        self._watchers: dict[str, list[asyncio.Queue[Event]]] = {}

    def wake(self, execution_id: str, event: Event) -> None:
        """Tell the watchers of `execution_id` that something happened (`event`: progress,
        or the end): a wake-up only, each reads the record itself."""
        for updates in self._watchers.get(execution_id, []):
            updates.put_nowait(event)

    async def watch(
        self, execution_id: str, *, after: StreamPosition | None = None, idle_seconds: float = 15.0
    ) -> AsyncIterator[dict[str, Any]]:
        """What happens to an execution, as it happens: `status` changes, `text` pieces when
        it was invoked with streaming, each `tool_call` as it ends, then `finished` with the
        whole record; each with an `id`, strictly increasing (`runtime/execution_stream.py`). With `after` (the id
        of the last event a client read), first what it missed since, from the journal; without,
        from now on. Yields `ping` after `idle_seconds` of quiet. Raises `ExecutionNotFoundError`."""
        updates: asyncio.Queue[Event] = asyncio.Queue()
        watchers = self._watchers.setdefault(execution_id, [])
        watchers.append(updates)
        cursor = StreamCursor(after)
        try:
            if len(watchers) == 1:  # bound before the status is read: no change falls between
                await self._bus.bind(self._queue, [progress_pattern(execution_id)])
            execution = await self._executions.get_execution(execution_id)
            steps = await self._steps(execution)
            if after is None:  # a client with no id follows from now on
                cursor.caught_up(steps)
            yield cursor.state("status", {"status": execution.status.value})
            for missed in cursor.caught_up(steps):
                yield missed
            while not execution.status.is_terminal:
                try:
                    update = await asyncio.wait_for(updates.get(), idle_seconds)
                except TimeoutError:
                    for missed in cursor.caught_up(await self._steps(execution)):  # progress is best effort
                        yield missed
                    yield cursor.state("ping", {})
                    continue
                execution, events = await self._followed(execution, cursor, update)
                for event in events:
                    yield event
            yield cursor.finished(execution.model_dump(mode="json"))
        finally:
            watchers.remove(updates)
            if not watchers:
                del self._watchers[execution_id]
                with contextlib.suppress(AgentRunnerError):  # the queue goes with this node anyway
                    await self._bus.unbind(self._queue, [progress_pattern(execution_id)])
                    if execution_id in self._watchers:  # a new watcher bound meanwhile: keep it bound
                        await self._bus.bind(self._queue, [progress_pattern(execution_id)])

    async def read_through(self, execution: Execution, after: StreamPosition) -> bool:
        """Whether a client at `after` has read all of `execution`'s stream, `finished`
        included: it has ended and `after` is at or past the end of its stream."""
        return execution.status.is_terminal and after >= stream_end(await self._steps(execution))

    async def _followed(
        self, execution: Execution, cursor: StreamCursor, update: Event
    ) -> tuple[Execution, list[dict[str, Any]]]:
        """The events a watcher at `cursor` gets for `update` (a progress event, or the end:
        then the execution as stored), and the execution as it now stands. The journal is
        read at each wake-up but a piece of text: it holds the tool calls and the text missed."""
        kind = update.payload.get("kind")
        if kind == "text":
            return execution, cursor.live_text(update.payload)
        if kind == "tool_call" and not self._journaled:  # no journal to read it from
            return execution, [cursor.state("tool_call", update.payload.get("tool_call", {}))]
        if kind not in ("tool_call", "status"):  # execution.finished: its steps are all recorded
            execution = await self._executions.get_execution(execution.execution_id)
        events = cursor.caught_up(await self._steps(execution))
        if kind == "status":
            events.append(cursor.state("status", {"status": update.payload.get("status")}))
        return execution, events
