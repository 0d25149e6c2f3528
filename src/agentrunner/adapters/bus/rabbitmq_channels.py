"""The channels of the RabbitMQ bus: consumers share them, declarations reuse them.

A channel per consumer made every agent cost a broker process, a channel open and a QoS
round trip in each pool, and capped a pool at RabbitMQ's `channel_max` (2,047 by default)
agents. Here:
- the consumers of durable queues share channels, at most `CONSUMERS_PER_CHANNEL` on one,
  and only with consumers of the same prefetch. RabbitMQ applies `basic.qos` with
  `global=false` to each consumer on its own, so an agent's prefetch bounds its work as it
  did on a channel of its own. The first consumers are spread over `SPREAD` channels: one
  channel runs one synchronous method at a time, and a pool sets up hundreds at once;
- a cancelled consumer's messages still in hand are nacked back to their queue (a channel
  of its own used to return them by closing); a channel is closed once its last consumer
  is gone;
- declarations (`declare`, `bind`, `unbind`) run on a few reused channels, one at a time
  on each, instead of a channel opened and closed for each.
A channel error (a declaration the broker refuses) closes what shares that channel: its
robust channel reopens and restores the other consumers (their queues are durable), and
the subscription that was being set up raises. Exclusive queues and the dead letters keep
a channel of their own (one each per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, ChannelNotFoundEntity

from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.logs import get_logger

log = get_logger(__name__)

# Consumers on one shared channel: 1,000 agents take 10 channels, not 1,000.
CONSUMERS_PER_CHANNEL = 100
# Shared channels opened before any takes a second consumer: set-ups on different channels
# run side by side (on one channel they wait for each other's round trips).
SPREAD = 8
# Channels declarations run on at once (each on its own: a refused one closes only its own).
SETUP_CHANNELS = 4

OpenChannel = Callable[[], Awaitable[AbstractChannel]]


class SubscriptionOwner(Protocol):
    """What a subscription needs of its bus."""

    close_timeout: float

    @property
    def connected(self) -> bool: ...

    def forget(self, subscription: RabbitMQSubscription) -> None: ...


class RabbitMQSubscription:
    """One consumer of one queue, on a shared channel or a channel of its own; `release`
    gives the channel back (or closes it) once the consumer is cancelled."""

    def __init__(
        self,
        bus: SubscriptionOwner,
        name: str,
        queue: AbstractQueue,
        release: Callable[[], Awaitable[None]],
    ) -> None:
        self._bus = bus
        self._name = name
        self._queue = queue
        self._release = release
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
            except asyncio.CancelledError:
                # Cut short: back to the queue now, for another consumer (the channel
                # may stay open for the consumers that share it).
                if not message.processed:
                    with contextlib.suppress(*CONNECTION_EXCEPTIONS, TimeoutError):
                        async with asyncio.timeout(self._bus.close_timeout):
                            await message.nack(requeue=True)
                raise
            finally:
                self._in_flight.discard(task)

        # A tag of our own: the client's comes from `random`, which a seeded test (or any
        # code that seeds it) makes repeat, and a repeated tag on a shared channel is refused.
        self._tag = await self._queue.consume(tracked, no_ack=False, consumer_tag=f"ctag.{uuid.uuid4().hex}")

    async def cancel(self, grace_seconds: float = 10.0) -> None:
        if self._tag is not None:
            tag, self._tag = self._tag, None
            if self._bus.connected:
                # Shielded: the client closes a channel whose method was cut off, and with
                # it every consumer that shares it.
                cancelling = asyncio.ensure_future(self._queue.cancel(tag))
                cancelling.add_done_callback(_retrieve)
                await bounded(asyncio.shield(cancelling), "cancel a consumer", self._bus.close_timeout)
            else:
                # A lost connection took the consumer with it; the robust queue forgets it
                # in the cancel's first step (so a reconnection does not bring it back),
                # and the rest would wait for a reconnection that may never come.
                await _forget_consumer(self._queue, tag)
        if self._in_flight:
            # Handlers still running after the grace are cut short (cancelled); their
            # unacked messages go back to the queue (nacked, or when the channel closes).
            _, cut_short = await asyncio.wait(list(self._in_flight), timeout=grace_seconds)
            for task in cut_short:
                task.cancel()
            if cut_short:
                await asyncio.wait(cut_short, timeout=5.0)
        await self._release()
        self._bus.forget(self)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.info("RabbitMQ consumer cancel failed", error=str(task.exception()))


async def _forget_consumer(queue: AbstractQueue, tag: str) -> None:
    cancelling = asyncio.ensure_future(queue.cancel(tag))
    cancelling.add_done_callback(_retrieve)
    await asyncio.sleep(0)  # its first step ran: the consumer is forgotten
    cancelling.cancel()
    await asyncio.wait([cancelling])


class SharedChannel:
    """A channel several consumers of the same prefetch share (see the module docstring)."""

    def __init__(self, channel: AbstractChannel, prefetch: int) -> None:
        self.channel = channel
        self.prefetch = prefetch
        self.consumers = 0
        # One queue object per queue name: a robust channel restores every queue object
        # declared on it, so consuming a queue again must not add another.
        self._queues: dict[str, AbstractQueue] = {}

    async def declare_queue(self, name: str) -> AbstractQueue:
        """Declare durable queue `name` on this channel (restored with the channel)."""
        queue = self._queues.get(name)
        if queue is None:
            queue = await self.channel.declare_queue(name, durable=True)
            self._queues[name] = queue
        else:
            await queue.declare()
        return queue


class ConsumerChannels:
    """The shared channels of one connection, by prefetch."""

    def __init__(self, open_channel: OpenChannel, close_timeout: float) -> None:
        self._open = open_channel
        self._close_timeout = close_timeout
        self._channels: dict[int, list[SharedChannel]] = {}
        self._opening = asyncio.Lock()

    async def take(self, prefetch: int) -> SharedChannel:
        """A channel for one more consumer with `prefetch` (the least busy that has room,
        or a new one); give it back with `give_back`."""
        async with self._opening:
            channels = self._channels.setdefault(prefetch, [])
            roomy = [
                shared
                for shared in channels
                if shared.consumers < CONSUMERS_PER_CHANNEL and not shared.channel.is_closed
            ]
            if len(channels) < SPREAD or not roomy:
                channel, _ = await own_channel(self._open, prefetch, self._close_timeout)
                shared = SharedChannel(channel, prefetch)
                channels.append(shared)
            else:
                shared = min(roomy, key=lambda candidate: candidate.consumers)
            shared.consumers += 1
            return shared

    async def give_back(self, shared: SharedChannel) -> None:
        """One consumer less on `shared`; the channel is closed with its last one."""
        shared.consumers -= 1
        if shared.consumers > 0:
            return
        channels = self._channels.get(shared.prefetch, [])
        with contextlib.suppress(ValueError):
            channels.remove(shared)
        # Closed even when the connection is down: a closed robust channel is not restored.
        await bounded(shared.channel.close(), "close a channel", self._close_timeout)


async def own_channel(
    open_channel: OpenChannel, prefetch: int, close_timeout: float
) -> tuple[AbstractChannel, Callable[[], Awaitable[None]]]:
    """A new channel with `prefetch` for each of its consumers, and what closes it."""
    channel = await open_channel()

    async def close() -> None:
        await bounded(channel.close(), "close a channel", close_timeout)

    try:
        await channel.set_qos(prefetch_count=max(1, prefetch))
    except BaseException:
        await close()
        raise
    return channel, close


class SetupChannels:
    """A few reused channels for declarations, one at a time on each."""

    def __init__(self, open_channel: OpenChannel, close_timeout: float) -> None:
        self._open = open_channel
        self._close_timeout = close_timeout
        self._idle: list[AbstractChannel] = []
        self._slots = asyncio.Semaphore(SETUP_CHANNELS)

    @contextlib.asynccontextmanager
    async def channel(self) -> AsyncIterator[AbstractChannel]:
        """A channel for the caller alone; one the broker closed with an error (a missing
        queue, say) is closed for good, not reused."""
        async with self._slots:
            channel = self._idle.pop() if self._idle else await self._open()
            try:
                yield channel
            except BaseException:
                await bounded(channel.close(), "close a channel", self._close_timeout)
                raise
            if not channel.is_closed:
                self._idle.append(channel)

    async def declare_queue(self, name: str, arguments: dict[str, Any]) -> None:
        """Declare the durable queue `name` with `arguments`, waiting for the broker's yes."""
        async with self.channel() as channel:
            underlay = await channel.get_underlay_channel()
            await underlay.queue_declare(name, durable=True, arguments=arguments)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(bounded(channel.close(), "close a channel", self._close_timeout) for channel in idle))


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


async def count_messages(connection: AbstractRobustConnection, queues: Sequence[str], where: str) -> list[int]:
    """How many messages wait in each of `queues` (0 for a queue that does not exist), on a
    channel of the count's own: a passive declare reads the count without creating a queue,
    and the broker closes the channel when the queue is missing."""
    counts: list[int] = []
    channel: AbstractChannel | None = None
    try:
        for queue in queues:
            if channel is None or channel.is_closed:
                channel = await connection.channel()
            try:
                declared = await channel.declare_queue(queue, passive=True)
            except ChannelNotFoundEntity:
                counts.append(0)
                continue
            counts.append(declared.declaration_result.message_count or 0)
    except CONNECTION_EXCEPTIONS as exc:
        raise DependencyUnavailableError(f"cannot count queued events on RabbitMQ at {where}: {exc}") from exc
    finally:
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await channel.close()
    return counts
