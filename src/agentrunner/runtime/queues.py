"""The queue report: per worker pool and agent, the messages waiting in the agent's queue,
the executions workers hold, and how long the oldest queued execution has waited, for
`GET /queues` and the gauges of `/metrics` (what autoscalers read).

Two sources, each the one that knows: the bus counts the messages ready in each queue (a
passive declare on RabbitMQ, the queue's length in the embedded bus; the same answer from
every process); the executions table counts what workers hold and since when work waits
(`ports.backlog.Backlog`), since RabbitMQ's own unacknowledged count is only on its
management API, a second way in that deployments leave closed. Either way a run paused
for a human is not backlog: its message was acknowledged when it paused, and its
execution is left out of the counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from agentrunner.domain.agent import ExecutionMode
from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.domain.execution import utcnow
from agentrunner.domain.roles import WorkerRole
from agentrunner.ports.backlog import AgentQueueFigures, Backlog
from agentrunner.ports.bus import EventBus
from agentrunner.runtime.registry import SERVED_MODES, AgentRegistry
from agentrunner.runtime.topics import agent_queue
from agentrunner.runtime.worker import AUTONOMOUS_POOL_MODES, CONTINUOUS_POOL_MODES

# The pool whose workers consume an agent's queue, by the agent's execution mode.
POOL_OF_MODE: dict[ExecutionMode, WorkerRole] = {
    **dict.fromkeys(AUTONOMOUS_POOL_MODES, "autonomous"),
    **dict.fromkeys(CONTINUOUS_POOL_MODES, "continuous"),
    ExecutionMode.COLLABORATIVE: "collaborative",
}
# A report waits at most this long for the bus and the database together.
MEASURE_TIMEOUT_SECONDS = 2.0


class QueueReport:
    """Measures the queues of every agent that runs (see the module docstring)."""

    def __init__(
        self,
        *,
        bus: EventBus,
        backlog: Backlog,
        registry: AgentRegistry,
        clock: Callable[[], datetime] = utcnow,
        timeout_seconds: float = MEASURE_TIMEOUT_SECONDS,
    ) -> None:
        self._bus = bus
        self._backlog = backlog
        self._registry = registry
        self._clock = clock
        self._timeout = timeout_seconds

    async def measure(self) -> list[AgentQueueFigures]:
        """Every running agent's figures, by pool then agent. Raises
        `DependencyUnavailableError` when the bus or the database does not answer in time."""
        return await self._bounded(self._figures(None))

    async def with_backlog(self, depths: Mapping[str, int]) -> list[AgentQueueFigures]:
        """The figures for queue `depths` the caller measured already (`/metrics` keeps its
        own measure of them); raises as `measure` does."""
        return await self._bounded(self._figures(depths))

    async def _bounded(self, figures: Awaitable[list[AgentQueueFigures]]) -> list[AgentQueueFigures]:
        try:
            async with asyncio.timeout(self._timeout):
                return await figures
        except TimeoutError as exc:
            raise DependencyUnavailableError(
                f"the queues were not measured within {self._timeout:g} s (the bus or the database is slow)"
            ) from exc

    async def _figures(self, depths: Mapping[str, int] | None) -> list[AgentQueueFigures]:
        configs = sorted(self._registry.in_modes(SERVED_MODES), key=lambda c: (POOL_OF_MODE[c.execution_mode], c.name))
        names = [config.name for config in configs]
        if depths is None:
            depths = await self._bus.queue_depths([agent_queue(name) for name in names])
        backlog = await self._backlog.backlog(names)
        now = self._clock()
        figures = []
        for config in configs:
            held = backlog[config.name]
            waited = held.oldest_queued_at
            figures.append(
                AgentQueueFigures(
                    pool=POOL_OF_MODE[config.execution_mode],
                    agent=config.name,
                    queue=agent_queue(config.name),
                    ready=depths.get(agent_queue(config.name), 0),
                    unacknowledged=held.in_hand,
                    oldest_queued_age_seconds=max((now - waited).total_seconds(), 0.0) if waited else None,
                )
            )
        return figures
