"""The event bus port: topic-routed, at-least-once delivery of events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from agentrunner.domain.event import DeadLetter, Event

EventHandler = Callable[[Event], Awaitable[None]]
DeadLetterHandler = Callable[[DeadLetter], Awaitable[None]]


class Subscription(Protocol):
    """A running consumer of one queue."""

    @property
    def queue(self) -> str:
        """The queue it consumes."""
        ...

    async def cancel(self, grace_seconds: float = 10.0) -> None:
        """Stop taking messages; in-flight handlers get `grace_seconds` to finish."""
        ...


class EventBus(Protocol):
    """Topic-routed, at-least-once delivery of events (ARCHITECTURE §5).

    Contract: `publish` returns only once the bus holds the event; every queue bound with a
    matching pattern gets one copy; consumers of one queue share its messages; a handler
    that raises has its event delivered again after a backoff (attempt + 1), and after the
    last attempt it becomes a dead letter; `trace_id` travels with every event and is the
    current trace while its handler runs.
    """

    async def start(self) -> None:
        """Connect; must be called before publish or subscribe."""
        ...

    async def publish(self, event: Event) -> None:
        """Route `event` by its topic to every bound queue; raise if it cannot be accepted."""
        ...

    async def notify(self, event: Event) -> None:
        """Route `event` as `publish` does, best effort: not kept across a broker restart, not
        confirmed, and dropped (never raised) while the bus cannot take it. For news that
        something recorded elsewhere supersedes (an execution's progress: its end is saved and
        published apart). Notices from one publisher reach a queue in the order sent. Raises
        `ValueError` for a topic that is not dot-separated words, as `publish` does."""
        ...

    async def subscribe(
        self,
        queue: str,
        patterns: Sequence[str],
        handler: EventHandler,
        *,
        prefetch: int = 1,
        exclusive: bool = False,
    ) -> Subscription:
        """Declare `queue` bound to `patterns` and run `handler` for each of its events.

        `prefetch` bounds the handlers in flight for this consumer; an `exclusive` queue
        belongs to this process alone and disappears with it.
        """
        ...

    async def declare(self, queue: str, patterns: Sequence[str]) -> None:
        """Declare durable `queue` bound to `patterns` (idempotent), without consuming it:
        events that match are kept for its consumers, even before the first subscribes."""
        ...

    async def bind(self, queue: str, patterns: Sequence[str]) -> None:
        """Route `patterns` to `queue` too (declared by `subscribe`); raises
        `DependencyUnavailableError` when the queue does not exist."""
        ...

    async def unbind(self, queue: str, patterns: Sequence[str]) -> None:
        """Stop routing `patterns` to `queue`; events already in it stay there."""
        ...

    async def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        """How many events wait in each of `queues` for a consumer (delivered but not yet
        acknowledged ones not counted); 0 for a queue that does not exist."""
        ...

    async def subscribe_dead_letters(self, handler: DeadLetterHandler) -> Subscription:
        """Run `handler` for each event that failed every attempt (kept until handled)."""
        ...

    async def replay(self, letter: DeadLetter) -> None:
        """Deliver a dead letter's event again, to its own queue only, from attempt 1."""
        ...

    async def ping(self) -> None:
        """Raise `DependencyUnavailableError` when the bus cannot take events."""
        ...

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Stop consuming, let in-flight handlers finish within `grace_seconds`, then close."""
        ...
