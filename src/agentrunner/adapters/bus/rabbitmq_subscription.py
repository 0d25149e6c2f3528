"""One consumer of a RabbitMQ queue (`RabbitMQEventBus.subscribe`), and the bounded close
of each step of shutting a bus down (a broker that is gone has nothing left to close)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from agentrunner.logs import get_logger

if TYPE_CHECKING:
    from agentrunner.adapters.bus.rabbitmq import RabbitMQEventBus

log = get_logger(__name__)


class RabbitMQSubscription:
    """One consumer of one queue, on a channel of its own (its own prefetch)."""

    def __init__(self, bus: RabbitMQEventBus, name: str, channel: AbstractChannel, queue: AbstractQueue) -> None:
        self._bus = bus
        self._name = name
        self._channel = channel
        self._queue = queue
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def queue(self) -> str:
        return self._name

    async def start(self, on_message: Callable[[AbstractIncomingMessage], Awaitable[None]]) -> None:
        async def tracked(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._in_flight.add(task)
            try:
                await on_message(message)
            finally:
                self._in_flight.discard(task)

        self._tag = await self._queue.consume(tracked, no_ack=False)

    async def cancel(self, grace_seconds: float = 10.0) -> None:
        if self._tag is not None:
            # basic.cancel needs the connection; a lost one took the consumer with it, and
            # the robust channel would wait for a reconnection that may never come.
            if self._bus.connected:
                await bounded(self._queue.cancel(self._tag), "cancel a consumer", self._bus.close_timeout)
            self._tag = None
        if self._in_flight:
            # Handlers still running after the grace are cut short (cancelled); their
            # unacked messages go back to the queue when the channel closes.
            _, cut_short = await asyncio.wait(list(self._in_flight), timeout=grace_seconds)
            for task in cut_short:
                task.cancel()
            if cut_short:
                await asyncio.wait(cut_short, timeout=5.0)
        # Closed even when the connection is down: a closed robust channel is not restored.
        await bounded(self._channel.close(), "close a channel", self._bus.close_timeout)
        self._bus.forget(self)


async def bounded(step: Awaitable[Any], what: str, seconds: float) -> None:
    """Await a closing `step`, at most `seconds`; a broker that is gone has nothing left to
    close, so its errors (and a step that outwaits the bound) are logged, not raised."""
    try:
        async with asyncio.timeout(seconds):
            await step
    except TimeoutError:
        log.warning("RabbitMQ did not answer while closing, went on without it", step=what, seconds=seconds)
    except CONNECTION_EXCEPTIONS as exc:
        log.info("RabbitMQ gone while closing", step=what, error=str(exc))
