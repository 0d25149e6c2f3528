"""The agents' work queues a pool consumes, kept in step with the registry.

Each agent has one durable queue (`agent.<name>`) bound to `invoke.<name>` and to the
agent's `event_subscriptions`. A pool (autonomous, continuous, collaborative) consumes the
queues of the available agents in its modes; when agents change it calls `sync`: new
agents start, removed ones stop (their queue keeps what it holds, for whoever serves them
next), and an agent whose subscriptions changed is consumed again with the new bindings,
the ones it lost unbound. One reconciler for every pool, so they cannot drift.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from functools import partial
from typing import Any

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.event import Event
from agentrunner.ports.bus import EventBus, Subscription
from agentrunner.runtime.topics import agent_queue, invoke_topic

# What a pool runs for each message of an agent's queue: (agent name, event).
QueueHandler = Callable[[str, Event], Awaitable[None]]

# How long a consumer stopped by `sync` may finish the message in hand.
_RESYNC_GRACE_SECONDS = 30.0

# Queues declared or consumed at once: each takes a few broker round trips, so one after
# another, 1,000 agents took seconds of start-up (bench/scale_agents.py); together they share
# the connection's round trips.
QUEUE_SETUPS_AT_ONCE = 32


async def concurrently(setups: list[Coroutine[Any, Any, None]]) -> None:
    """Run `setups` (queue declarations, subscriptions), at most `QUEUE_SETUPS_AT_ONCE` at a
    time, each to its end; then raise the first error, if any (what failed is set up again
    by the next sync, as before)."""
    slots = asyncio.Semaphore(QUEUE_SETUPS_AT_ONCE)

    async def one(setup: Coroutine[Any, Any, None]) -> None:
        async with slots:
            await setup

    errors = [
        outcome
        for outcome in await asyncio.gather(*(one(setup) for setup in setups), return_exceptions=True)
        if isinstance(outcome, BaseException)
    ]
    if errors:
        raise errors[0]


def queue_patterns(config: AgentConfig) -> frozenset[str]:
    """The patterns an agent's queue is bound to: its invocations and its subscriptions."""
    return frozenset({invoke_topic(config.name), *config.event_subscriptions})


class AgentQueues:
    """The consumers of one pool's agent queues (see the module docstring)."""

    def __init__(self, *, bus: EventBus, handler: QueueHandler, prefetch: int) -> None:
        self._bus = bus
        self._handler = handler
        self._prefetch = prefetch
        self._consumers: dict[str, tuple[Subscription, frozenset[str]]] = {}

    def __len__(self) -> int:
        return len(self._consumers)

    async def sync(self, configs: Iterable[AgentConfig]) -> None:
        """Consume exactly the queues of `configs`, bound to their current subscriptions.
        Prompts and models need nothing: each message reads its agent's config when it runs.
        Raises what the bus raises (a consumer left stopped is started by the next sync)."""
        wanted = {config.name: queue_patterns(config) for config in configs}
        for name, (subscription, patterns) in list(self._consumers.items()):
            if wanted.get(name) != patterns:
                del self._consumers[name]
                await subscription.cancel(_RESYNC_GRACE_SECONDS)
                await self._bus.unbind(agent_queue(name), sorted(patterns - wanted.get(name, frozenset())))
        await concurrently(
            [self.consume(name, patterns) for name, patterns in wanted.items() if name not in self._consumers]
        )

    async def consume(self, name: str, patterns: frozenset[str]) -> None:
        """Consume agent `name`'s queue, bound to `patterns`."""
        subscription = await self._bus.subscribe(
            agent_queue(name), sorted(patterns), partial(self._handler, name), prefetch=self._prefetch
        )
        self._consumers[name] = (subscription, patterns)

    async def cut(self, name: str) -> frozenset[str] | None:
        """Stop consuming `name`'s queue at once (the message in hand goes back to the
        queue); the patterns it was bound to, or None when it was not consumed."""
        entry = self._consumers.pop(name, None)
        if entry is None:
            return None
        subscription, patterns = entry
        await subscription.cancel(0.0)
        return patterns

    async def stop(self, grace_seconds: float) -> None:
        """Stop every consumer; messages in hand get `grace_seconds` to finish."""
        consumers = [subscription for subscription, _ in self._consumers.values()]
        self._consumers.clear()
        await asyncio.gather(*(subscription.cancel(grace_seconds) for subscription in consumers))
