"""The outbox relay: events written in the same transaction as the change that caused
them are published right after the commit, and any left behind (a crash between the
database and the bus) are published by a background sweep. Delivery is at least once.

Marking events published is off the hot path: ids are queued and one background writer
marks everything queued meanwhile in one statement (group commit), so a busy node spends
one transaction on many marks instead of one per event. A mark lost in a crash only means
the sweep publishes that event again, which at-least-once delivery allows anyway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from agentrunner.background import cancelled, every, forever, spawn
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.domain.event import Event
from agentrunner.logs import get_logger
from agentrunner.ports.bus import EventBus
from agentrunner.ports.metrics import Metrics
from agentrunner.ports.state import Outbox

log = get_logger(__name__)


class OutboxRelay:
    """Publishes outbox events: at once after their commit, and again from a sweep every
    `interval_seconds` for those still unpublished after `grace_seconds`."""

    def __init__(
        self,
        *,
        bus: EventBus,
        store: Outbox,
        interval_seconds: float = 1.0,
        grace_seconds: float = 5.0,
        mark_every_seconds: float = 0.05,
        metrics: Metrics | None = None,
    ) -> None:
        self._bus = bus
        self._metrics = metrics
        self._mark_every = mark_every_seconds
        self._store = store
        self._interval = interval_seconds
        self._grace = grace_seconds
        self._sweeper: asyncio.Task[None] | None = None
        self._marker: asyncio.Task[None] | None = None
        self._unmarked: list[str] = []
        self._marks_waiting = asyncio.Event()
        self._deliveries: set[asyncio.Task[None]] = set()
        # When publishing started failing (monotonic), None while it works: an outage of the
        # bus is logged once at its start and once at its end, not once per event and sweep.
        self._held_since: float | None = None

    async def start(self) -> None:
        """Start the background sweep and the writer of marks."""
        self._sweeper = every(self._interval, self._sweep_logged, task="outbox-sweep", metrics=self._metrics)
        await self.start_marking()

    async def start_marking(self) -> None:
        """Start the writer of marks alone, with no sweep: for a process that only publishes
        what it committed itself (a worker), whose marks then cost one statement per batch
        instead of one per delivery awaited before its message is acknowledged. The sweep
        stays with the processes that accept work (one per node is enough)."""
        self._marker = forever(self._mark_waiting, task="outbox-marks", metrics=self._metrics)

    async def stop(self) -> None:
        """Finish the deliveries under way (10 s at most), stop the sweep and write the marks
        still queued; what is left unpublished is published by the next node that starts."""
        if self._deliveries:
            await asyncio.wait(self._deliveries, timeout=10)
        for task in (*self._deliveries, self._sweeper, self._marker):
            await cancelled(task)
        self._sweeper = self._marker = None
        await self.flush()

    async def flush(self) -> None:
        """Mark published, now, every event queued for marking."""
        batch, self._unmarked = self._unmarked, []
        if batch:
            await self._mark(batch)

    def deliver_soon(self, events: Sequence[Event]) -> None:
        """`deliver` in the background: the caller does not wait for the broker. For events
        already committed to the outbox, whose caller only needs them recorded: a failure
        leaves them to the sweep, as `deliver` does."""
        task = spawn(self._deliver_logged(events), name="outbox-deliver")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver_logged(self, events: Sequence[Event]) -> None:
        try:
            await self.deliver(events)
        except Exception:  # nobody awaits this task: say it, the sweep publishes them later
            log.exception("outbox delivery failed; the sweep publishes these events later", count=len(events))

    async def deliver(self, events: Sequence[Event]) -> None:
        """Publish events just committed to the outbox, then mark them published.

        An `AgentRunnerError` (the bus is down, a mark not written) is logged, not raised:
        those events stay unpublished, or unmarked, and the sweep publishes them later. Any
        other exception of a publish is raised, after every publish of the batch has ended
        and before anything is marked: it is a bug, not an outage, and the caller (or
        `deliver_soon`'s logger) must see it; the sweep still publishes the batch again."""
        results = await asyncio.gather(*(self._bus.publish(event) for event in events), return_exceptions=True)
        published: list[str] = []
        refused: list[AgentRunnerError] = []
        for event, result in zip(events, results, strict=True):
            if isinstance(result, AgentRunnerError):
                refused.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                published.append(event.event_id)
        self._note_outage(refused, published=len(published))
        if not published:
            return
        if self._marker is None:  # not started (a one-off relay): mark now
            await self._mark(published)
        else:
            self._unmarked.extend(published)
            self._marks_waiting.set()

    def _note_outage(self, refused: list[AgentRunnerError], *, published: int) -> None:
        """Log the start of a publishing outage once (with the first reason) and its end once
        (with how long it lasted); events refused in between are left to the sweep quietly."""
        if refused and self._held_since is None:
            self._held_since = time.monotonic()
            log.warning(
                "outbox publishing deferred to the sweep until the event bus answers",
                count=len(refused),
                error=refused[0].message,
            )
        elif published and not refused and self._held_since is not None:
            log.info("outbox publishing again", outage_seconds=round(time.monotonic() - self._held_since, 1))
            self._held_since = None

    async def sweep(self, *, older_than_seconds: float | None = None) -> int:
        """Publish every unpublished outbox event older than `older_than_seconds` (default:
        the grace period); return how many."""
        age = self._grace if older_than_seconds is None else older_than_seconds
        entries = await self._store.pending_events(limit=500, older_than_seconds=age)
        if entries:
            if self._held_since is None:  # during an outage the same events come round every pass
                log.warning("outbox sweep publishing events left behind", count=len(entries))
            await self.deliver([entry.event for entry in entries])
        return len(entries)

    async def _mark(self, event_ids: list[str]) -> None:
        try:
            await self._store.mark_published(event_ids)
        except AgentRunnerError as exc:
            # Published but not marked: the sweep publishes them again (at least once).
            log.warning("outbox mark deferred", count=len(event_ids), error=exc.message)

    async def _mark_waiting(self) -> None:
        await self._marks_waiting.wait()
        await asyncio.sleep(self._mark_every)  # what else is published meanwhile joins the batch
        self._marks_waiting.clear()
        await self.flush()

    async def _sweep_logged(self) -> None:
        try:
            await self.sweep()
        except AgentRunnerError as exc:
            log.warning("outbox sweep failed, trying again", error=exc.message)
