"""The outbox relay: events written in the same transaction as the change that caused
them are published right after the commit, and any left behind (a crash between the
database and the bus) are published by a background sweep. Delivery is at least once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from agentrunner.domain.errors import AgentRunnerError
from agentrunner.domain.event import Event
from agentrunner.logs import get_logger
from agentrunner.ports import EventBus, StateStore

log = get_logger(__name__)


class OutboxRelay:
    """Publishes outbox events: at once after their commit, and again from a sweep every
    `interval_seconds` for those still unpublished after `grace_seconds`."""

    def __init__(
        self, *, bus: EventBus, store: StateStore, interval_seconds: float = 1.0, grace_seconds: float = 5.0
    ) -> None:
        self._bus = bus
        self._store = store
        self._interval = interval_seconds
        self._grace = grace_seconds
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the background sweep."""
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="outbox-sweep")

    async def stop(self) -> None:
        """Stop the sweep; what is left is published by the next node that starts."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def deliver(self, events: Sequence[Event]) -> None:
        """Publish events just committed to the outbox, then mark them published. A
        failure is logged, not raised: the sweep publishes them later."""
        published: list[str] = []
        try:
            for event in events:
                await self._bus.publish(event)
                published.append(event.event_id)
        except AgentRunnerError as exc:
            log.warning("outbox publish deferred to the sweep", topic=event.topic, error=exc.message)
        finally:
            if published:
                await self._mark(published)

    async def sweep(self, *, older_than_seconds: float | None = None) -> int:
        """Publish every unpublished outbox event older than `older_than_seconds` (default:
        the grace period); return how many."""
        age = self._grace if older_than_seconds is None else older_than_seconds
        entries = await self._store.pending_events(limit=500, older_than_seconds=age)
        if entries:
            log.warning("outbox sweep publishing events left behind", count=len(entries))
            await self.deliver([entry.event for entry in entries])
        return len(entries)

    async def _mark(self, event_ids: list[str]) -> None:
        try:
            await self._store.mark_published(event_ids)
        except AgentRunnerError as exc:
            # Published but not marked: the sweep publishes them again (at least once).
            log.warning("outbox mark deferred", count=len(event_ids), error=exc.message)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except AgentRunnerError as exc:
                log.warning("outbox sweep failed, trying again", error=exc.message)
