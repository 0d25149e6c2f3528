"""The role table and the walk through it.

Each row is one component of the node: the roles that run it (None: every node), how it
starts, what it does when the agents are reloaded, how it stops, and the health checks it
answers for. The rows are in start order; `start` walks them through an
`AsyncExitStack`, so a start that fails part-way closes exactly what was opened, newest
first, and `stop` closes the same stack: every component that touches the state store or
the bus has ended (its tasks cancelled and awaited) before the store and the bus close.
A stop that raises is logged and the walk goes on; the first such error is raised at the
end. A stop cut short (its caller's deadline, a cancellation) still closes the components
after the one it was in, then lets the cancellation through."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentrunner.domain.roles import WORKER_ROLES, AnyRole
from agentrunner.logs import get_logger

if TYPE_CHECKING:
    from agentrunner.node.core import Node

log = get_logger(__name__)

Step = Callable[[], Awaitable[None]]
Check = tuple[str, Step]


@dataclass(frozen=True, slots=True)
class Component:
    """A row of the role table (see the module docstring). `ready` is a readiness check
    (the node is not ready while it fails); `advisory` one that is shown but does not."""

    name: str
    roles: frozenset[AnyRole] | None = None
    start: Step | None = None
    reload: Step | None = None
    stop: Step | None = None
    ready: Check | None = None
    advisory: Check | None = None


def _on(*roles: AnyRole) -> frozenset[AnyRole]:
    return frozenset(roles)


def role_table(node: Node) -> tuple[Component, ...]:
    """The components of every role, in start order, bound to `node`'s adapters and engines."""
    work = node.accepts_work  # orchestrator, scheduler or a served slack role: it records work
    rows = (
        Component("tracing", stop=node.tracing.close) if node.tracing is not None else None,
        Component("store", start=node.store.start, stop=node.store.close, ready=("database", node.store.database.ping)),
        Component("cache", stop=node.cache.close, advisory=("cache", node.cache.ping)),
        Component("limits", advisory=("limits", node.limits_store.check)),
        Component("providers", stop=node.catalog.close),
        Component("bus", start=node.bus.start, stop=node.bus.close, ready=("event_bus", node.bus.ping)),
        # webhooks, Slack replies, tools: none builds its TLS context on the loop
        Component("egress", start=node.egress.load_tls),
        Component("tools", stop=node.tools.close),
        Component("agents", start=node.reloader.load_all),
        # One owner writes the registry table, so replicas of other roles never race on it.
        Component("agent-records", _on("config"), start=node.sync_agent_records, reload=node.sync_agent_records),
        Component("orchestrator", _on("orchestrator"), start=node.orchestrator.start, stop=node.orchestrator.stop),
        # Eval runs under way are the orchestrator's tasks: stopped (and saved as error) with it.
        Component("evals", _on("orchestrator"), stop=node.evals.stop),
        Component("dead-letters", _on("orchestrator"), start=node.dead_letters.start, stop=node.dead_letters.stop),
        Component("webhooks", _on("orchestrator"), start=node.webhooks.start, stop=node.webhooks.stop),
        # A process that records work declares the agents' queues before it does.
        Component("agent-queues", start=node.orchestrator.declare_queues, reload=node.orchestrator.declare_queues)
        if work
        else None,
        Component("webhook-queues", start=node.webhooks.declare) if work else None,
        # Events a crash left in the outbox are published by any node with a sweep. The
        # slack role accepts invocations too: its outbox marks are batched off the ack path.
        Component("relay", start=node.relay.start, stop=node.relay.stop)
        if work
        # A worker's outbox marks are batched too, off its ack path; it has no sweep of its own.
        else Component("relay-marks", _on(*WORKER_ROLES), start=node.relay.start_marking, stop=node.relay.stop),
        Component("autonomous", _on("autonomous"), start=node.pool.start, reload=node.pool.sync, stop=node.pool.stop),
        Component(
            "continuous",
            _on("continuous"),
            start=node.continuous.start,
            reload=node.continuous.sync,
            stop=node.continuous.stop,
        ),
        Component(
            "collaborative",
            _on("collaborative"),
            start=node.collaborative.start,
            reload=node.collaborative.sync,
            stop=node.collaborative.stop,
        ),
        Component(
            "scheduler",
            _on("scheduler"),
            start=node.scheduler.start,
            reload=node.scheduler.sync_config,
            stop=node.scheduler.stop,
        ),
        Component("fire-watch", _on("scheduler"), start=node.fire_watch.start, stop=node.fire_watch.stop),
        # Singleton background work lives with the scheduler (one purger at a time: a lease).
        Component("retention", _on("scheduler"), start=node.retention.start, stop=node.retention.stop),
        Component("slack", _on("slack"), start=node.start_slack, stop=node.stop_slack),
        # RabbitMQ keeps and redelivers its own events; the in-memory bus died with the last process.
        Component("recovery", start=node.resume_unfinished) if not node.settings.rabbitmq_url else None,
        Component("reloads", start=node.reloader.start, stop=node.reloader.stop),
        Component("loop-lag", start=node.loop_lag.start, stop=node.loop_lag.stop),
    )
    return tuple(row for row in rows if row is not None and (row.roles is None or not row.roles.isdisjoint(node.roles)))


class Lifecycle:
    """Starts and stops `components` (rows of the role table, in start order)."""

    def __init__(self, components: Sequence[Component]) -> None:
        self.components = tuple(components)
        self._open: AsyncExitStack | None = None
        self._failures: list[Exception] = []

    async def start(self) -> None:
        """Start every component in order. When one raises, those started (and the one
        that raised, which may have opened part of itself) are stopped, newest first, and
        the error is raised."""
        self._failures = []
        async with AsyncExitStack() as stack:
            for component in self.components:
                if component.stop is not None:
                    # Pushed before its start: a start that fails half-way is closed too.
                    stack.push_async_callback(self._stop, component)
                if component.start is not None:
                    await component.start()
            self._open = stack.pop_all()

    async def reload(self) -> None:
        """Apply the registry's agents to every component that has a reload step, in order."""
        for component in self.components:
            if component.reload is not None:
                await component.reload()

    async def stop(self) -> None:
        """Stop what `start` started, newest first (nothing when it is not running). A stop
        that raises is logged and the others still run; the first error is raised then."""
        stack, self._open = self._open, None
        if stack is None:
            return
        self._failures = []
        await stack.aclose()
        failures, self._failures = self._failures, []
        if failures:
            raise failures[0]

    def checks(self) -> tuple[dict[str, Step], dict[str, Step]]:
        """The readiness and the advisory health checks of the components."""
        ready = dict(component.ready for component in self.components if component.ready is not None)
        advisory = dict(component.advisory for component in self.components if component.advisory is not None)
        return ready, advisory

    async def _stop(self, component: Component) -> None:
        assert component.stop is not None
        began = time.perf_counter()
        try:
            await component.stop()
        except Exception as exc:
            log.error(
                "component did not stop cleanly; stopping the others",
                component=component.name,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
            self._failures.append(exc)
        else:
            log.debug("component stopped", component=component.name, ms=round((time.perf_counter() - began) * 1000, 1))
