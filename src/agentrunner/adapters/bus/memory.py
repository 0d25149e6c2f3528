"""The embedded EventBus: topic routing, competing consumers, retries and dead letters,
in one process, with the semantics the RabbitMQ adapter has (ARCHITECTURE §5)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from agentrunner.background import spawn
from agentrunner.domain.errors import AgentRunnerError, DependencyUnavailableError
from agentrunner.domain.event import DeadLetter, Event
from agentrunner.domain.topics import check_patterns, topic_matches, topic_problem
from agentrunner.logs import get_logger
from agentrunner.ports.bus import DeadLetterHandler, EventHandler
from agentrunner.tracing import traced

log = get_logger(__name__)

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)

_Item = TypeVar("_Item")


@dataclass
class _Queue(Generic[_Item]):
    name: str
    exclusive: bool
    patterns: set[str] = field(default_factory=set)
    messages: asyncio.Queue[_Item] = field(default_factory=asyncio.Queue)


class InMemorySubscription(Generic[_Item]):
    """Consumer tasks of one queue; `prefetch` of them bound the handlers in flight."""

    def __init__(
        self,
        bus: InMemoryEventBus,
        queue: _Queue[_Item],
        handle: Callable[[_Item], Awaitable[None]],
        prefetch: int,
    ) -> None:
        self._bus = bus
        self._queue = queue
        self._handle = handle
        self._busy: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._tasks = [spawn(self._consume(), name=f"bus:{queue.name}") for _ in range(prefetch)]

    @property
    def queue(self) -> str:
        return self._queue.name

    async def _consume(self) -> None:
        current = asyncio.current_task()
        assert current is not None
        while not self._stopping:
            item = await self._queue.messages.get()
            self._busy.add(current)
            try:
                await self._handle(item)
            except asyncio.CancelledError:
                # Like an AMQP channel closing with the message unacked: deliver it again.
                self._queue.messages.put_nowait(item)
                raise
            finally:
                self._busy.discard(current)

    async def cancel(self, grace_seconds: float = 10.0) -> None:
        # A consumer that finishes its handler sees the flag and takes nothing more.
        self._stopping = True
        for task in self._tasks:
            if task not in self._busy:
                task.cancel()
        busy = [task for task in self._tasks if task in self._busy]
        if busy:
            _, pending = await asyncio.wait(busy, timeout=grace_seconds)
            for task in pending:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._bus.forget(self)


class InMemoryEventBus:
    """EventBus for one process: nothing to install, same routing and retry rules."""

    def __init__(self, *, retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS) -> None:
        self._retry_delays = tuple(retry_delays)
        self._queues: dict[str, _Queue[Event]] = {}
        self._dead_letters: _Queue[DeadLetter] = _Queue(name="dead-letters", exclusive=False)
        self._subscriptions: list[InMemorySubscription[Any]] = []
        self._timers: set[asyncio.Task[None]] = set()
        self._closed = True

    @property
    def max_attempts(self) -> int:
        """Deliveries an event gets before it becomes a dead letter."""
        return len(self._retry_delays) + 1

    async def start(self) -> None:
        self._closed = False

    async def ping(self) -> None:
        if self._closed:
            raise DependencyUnavailableError("the in-memory event bus is closed")

    def _require_open(self, action: str) -> None:
        if self._closed:
            raise DependencyUnavailableError(f"cannot {action}: the event bus is closed")

    async def publish(self, event: Event) -> None:
        self._require_open(f"publish {event.topic!r}")
        problem = topic_problem(event.topic)
        if problem:
            raise ValueError(problem)
        for queue in self._queues.values():
            if any(topic_matches(pattern, event.topic) for pattern in queue.patterns):
                queue.messages.put_nowait(event)
        # Let consumers run, as they would while a broker confirms: a publishing loop
        # must not starve every handler until it ends.
        await asyncio.sleep(0)

    async def notify(self, event: Event) -> None:
        # Nothing to confirm in memory: a notice is a publish that a closed bus drops.
        if not self._closed:
            await self.publish(event)
        elif problem := topic_problem(event.topic):
            raise ValueError(problem)

    async def subscribe(
        self,
        queue: str,
        patterns: Sequence[str],
        handler: EventHandler,
        *,
        prefetch: int = 1,
        exclusive: bool = False,
    ) -> InMemorySubscription[Event]:
        self._require_open(f"subscribe {queue!r}")
        check_patterns(patterns)
        declared = self._queues.setdefault(queue, _Queue(name=queue, exclusive=exclusive))
        declared.patterns.update(patterns)

        async def handle(event: Event) -> None:
            with traced(event.trace_id):
                try:
                    await handler(event)
                except Exception as exc:  # noqa: BLE001 - any handler failure is a nack
                    reason = exc.message if isinstance(exc, AgentRunnerError) else f"{type(exc).__name__}: {exc}"
                    self._retry_later(declared, event, reason)

        subscription = InMemorySubscription(self, declared, handle, max(1, prefetch))
        self._subscriptions.append(subscription)
        return subscription

    async def declare(self, queue: str, patterns: Sequence[str]) -> None:
        self._require_open(f"declare {queue!r}")
        check_patterns(patterns)
        self._queues.setdefault(queue, _Queue(name=queue, exclusive=False)).patterns.update(patterns)

    async def bind(self, queue: str, patterns: Sequence[str]) -> None:
        self._require_open(f"bind {queue!r}")
        declared = self._queues.get(queue)
        if declared is None:
            raise DependencyUnavailableError(f"cannot bind {queue!r}: no such queue (subscribe declares it)")
        declared.patterns.update(patterns)

    async def unbind(self, queue: str, patterns: Sequence[str]) -> None:
        self._require_open(f"unbind {queue!r}")
        declared = self._queues.get(queue)
        if declared is not None:
            declared.patterns.difference_update(patterns)

    async def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        self._require_open("count queued events")
        return {name: queue.messages.qsize() if (queue := self._queues.get(name)) else 0 for name in queues}

    async def subscribe_dead_letters(self, handler: DeadLetterHandler) -> InMemorySubscription[DeadLetter]:
        self._require_open("consume dead letters")

        async def handle(letter: DeadLetter) -> None:
            with traced(letter.event.trace_id):
                try:
                    await handler(letter)
                except Exception:
                    log.exception("dead-letter handler failed, keeping the letter", queue=letter.queue)
                    self._dead_letters.messages.put_nowait(letter)
                    await asyncio.sleep(1.0)  # no hot loop on a handler that keeps failing

        subscription = InMemorySubscription(self, self._dead_letters, handle, 1)
        self._subscriptions.append(subscription)
        return subscription

    async def replay(self, letter: DeadLetter) -> None:
        self._require_open(f"replay into {letter.queue!r}")
        queue = self._queues.get(letter.queue)
        if queue is None:
            raise DependencyUnavailableError(f"cannot replay: queue {letter.queue!r} does not exist")
        queue.messages.put_nowait(letter.event.model_copy(update={"attempt": 1}))

    def _retry_later(self, queue: _Queue[Event], event: Event, reason: str) -> None:
        """Deliver `event` again after its backoff delay, or make it a dead letter."""
        log.warning("event handler failed", queue=queue.name, topic=event.topic, attempt=event.attempt, error=reason)
        if event.attempt >= self.max_attempts:
            log.error("event dead-lettered", queue=queue.name, topic=event.topic, attempts=event.attempt, error=reason)
            self._dead_letters.messages.put_nowait(DeadLetter(queue=queue.name, event=event, error=reason))
            return
        again = event.model_copy(update={"attempt": event.attempt + 1})

        async def redeliver() -> None:
            await asyncio.sleep(self._retry_delays[event.attempt - 1])
            queue.messages.put_nowait(again)

        timer = spawn(redeliver(), name=f"bus-retry:{queue.name}")
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    def forget(self, subscription: InMemorySubscription[Any]) -> None:
        """Drop a cancelled subscription, and its queue when that queue was exclusive."""
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)
        queue = self._queues.get(subscription.queue)
        if queue and queue.exclusive and not any(s.queue == queue.name for s in self._subscriptions):
            del self._queues[queue.name]

    async def close(self, grace_seconds: float = 10.0) -> None:
        self._closed = True
        await asyncio.gather(*(sub.cancel(grace_seconds) for sub in list(self._subscriptions)))
        for timer in list(self._timers):
            timer.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)
