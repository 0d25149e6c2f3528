"""Crash recovery for the embedded mode: the in-memory bus died with the last process, and
with it the events of the executions that had not ended. They are handed to the pools
again. (RabbitMQ keeps and redelivers its own events, so a node on it never runs this.)"""

from __future__ import annotations

from agentrunner.domain.event import Event
from agentrunner.domain.execution import ExecutionStatus
from agentrunner.logs import get_logger
from agentrunner.ports.bus import EventBus
from agentrunner.ports.state import ExecutionQueries
from agentrunner.runtime.pinned_configs import pinned_to
from agentrunner.runtime.topics import invoke_topic

log = get_logger(__name__)

# Executions read from the store per page.
PAGE_SIZE = 200


async def resume_unfinished(*, store: ExecutionQueries, bus: EventBus) -> int:
    """Publish the invocation event of every queued or running execution again; returns
    how many. Raises what the store or the bus raise (the node does not start then)."""
    resumed = 0
    for status in (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING):
        cursor: str | None = None
        while True:
            page = await store.list_executions(status=status, limit=PAGE_SIZE, cursor=cursor)
            for execution in page.items:
                await bus.publish(
                    Event(
                        topic=invoke_topic(execution.agent),
                        # with its tenant: a resumed run still counts for it
                        payload={"execution_id": execution.execution_id}
                        | ({"tenant": execution.tenant} if execution.tenant else {})
                        | pinned_to(execution),
                        trace_id=execution.trace_id,
                    )
                )
                resumed += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    if resumed:
        log.warning("resuming executions left unfinished by the last run", count=resumed)
    return resumed
