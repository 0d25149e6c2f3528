"""The distributed EventBus on RabbitMQ (aio-pika, robust connection).

Layout, for a prefix P (several platforms or test runs share a broker without meeting):
- exchange `P.events` (topic, durable): every event goes there, its topic the routing key;
- queue `P.q.<name>` (durable, or exclusive and auto-deleted) bound with the patterns;
- retry queues `P.q.<name>.retry.<ms>` (rabbitmq_messages.retry_queue), one per delay,
  declared at the first retry: a failed event waits there with attempt + 1, then goes
  straight back to `P.q.<name>` (dead-lettered through the default exchange);
- queue `P.dead-letters`: events that failed every attempt, with their queue and error.
Messages are persistent, publishes wait for the broker's confirm, and a message is acked
only after its handler returned or its retry copy was confirmed: nothing is lost between.
Notices (`notify`: an execution's progress) go on a channel without confirms, transient:
the broker neither writes nor confirms them, and one lost changes nothing (the end they
precede is recorded and published as above). Nothing is published `mandatory`: a message
no queue takes (progress nobody watches) is dropped by the broker, not sent back whole.
Broker and network errors become `DependencyUnavailableError` here and nowhere else.

Through an outage (aio-pika's robust connection tries again every `reconnect_interval`):
- a publish made while the connection is down waits for it at most `reconnect_wait_seconds`
  (a dropped connection comes back within that), then raises `DependencyUnavailableError`:
  the API answers 503 in seconds, not after the publish timeout, and the outbox keeps what
  it holds for its sweep. A broker that is connected but does not confirm (a memory alarm)
  still gets `publish_timeout_seconds`;
- `close` never waits on the broker for longer than `close_timeout_seconds` a step: a
  consumer cancel or channel close on a robust connection that is down would otherwise wait
  for a reconnection that may never come (a shutdown hung for good);
- the loss and the recovery are logged once each, with how long the broker was away
  (aio-pika's line per reconnection attempt only at DEBUG: reconnect_noise.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from agentrunner.adapters.bus.memory import DEFAULT_RETRY_DELAYS
from agentrunner.adapters.bus.rabbitmq_channels import (
    ConsumerChannels,
    RabbitMQSubscription,
    SetupChannels,
    bounded,
    count_messages,
    own_channel,
)
from agentrunner.adapters.bus.rabbitmq_messages import (
    ERROR_HEADER,
    QUEUE_HEADER,
    event_message,
    retry_queue,
    take_dead_letter,
)
from agentrunner.adapters.bus.reconnect_noise import quiet_reconnect_noise
from agentrunner.domain.errors import AgentRunnerError, DependencyUnavailableError
from agentrunner.domain.event import DeadLetter, Event, decode_event
from agentrunner.domain.redaction import mask_url
from agentrunner.domain.topics import check_patterns, topic_problem
from agentrunner.logs import get_logger
from agentrunner.ports.bus import DeadLetterHandler, EventHandler
from agentrunner.tracing import traced

log = get_logger(__name__)

# A publish while the connection is down waits this long for it: the robust connection
# tries again every second, so a dropped connection is back well within it (as the state
# store's reconnect window covers a database restart of a second or two).
RECONNECT_WAIT_SECONDS = 2.5
# Each step of a close (cancel a consumer, close a channel, close the connection) waits on
# the broker at most this long.
CLOSE_TIMEOUT_SECONDS = 5.0


class RabbitMQEventBus:
    """EventBus on a RabbitMQ broker (see the module docstring for the layout)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "agentrunner",
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        publish_timeout_seconds: float = 10.0,
        reconnect_interval_seconds: float = 1.0,
        reconnect_wait_seconds: float = RECONNECT_WAIT_SECONDS,
        close_timeout_seconds: float = CLOSE_TIMEOUT_SECONDS,
        connection_name: str = "agentrunner",
    ) -> None:
        self._url = url
        self._where = mask_url(url)
        self._prefix = prefix
        self._retry_ms = tuple(max(1, round(delay * 1000)) for delay in retry_delays)
        self._publish_timeout = publish_timeout_seconds
        self._reconnect_interval = reconnect_interval_seconds
        self._reconnect_wait = reconnect_wait_seconds
        self.close_timeout = close_timeout_seconds
        self._lost_at: float | None = None  # monotonic time the connection went down
        self._connection_name = connection_name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._notices: AbstractExchange | None = None  # the exchange, on the channel without confirms
        self._subscriptions: list[RabbitMQSubscription] = []
        self._consumer_channels = ConsumerChannels(self._new_channel, close_timeout_seconds)
        self._setup_channels = SetupChannels(self._new_channel, close_timeout_seconds)
        self._declared: set[str] = set()
        self._exclusive: set[str] = set()  # queues whose retry queues their channel declares
        self._closed = True

    @property
    def max_attempts(self) -> int:
        """Deliveries an event gets before it becomes a dead letter."""
        return len(self._retry_ms) + 1

    @property
    def declared(self) -> tuple[str, frozenset[str]]:
        """The exchange and the queues this bus declared (to inspect or tear down a prefix)."""
        return f"{self._prefix}.events", frozenset(self._declared)

    @property
    def connected(self) -> bool:
        """Whether the connection to the broker is up right now."""
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    @property
    def _exchange_name(self) -> str:
        return f"{self._prefix}.events"

    def _queue_name(self, queue: str) -> str:
        return f"{self._prefix}.q.{queue}"

    @property
    def _dead_letter_queue(self) -> str:
        return f"{self._prefix}.dead-letters"

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        quiet_reconnect_noise()  # the loss and the recovery are logged here, once each
        try:
            self._connection = await aio_pika.connect_robust(
                self._url,
                client_properties={"connection_name": self._connection_name},
                timeout=10,
                reconnect_interval=self._reconnect_interval,
            )
            self._connection.close_callbacks.add(self._on_lost)
            self._connection.reconnect_callbacks.add(self._on_restored)
            self._channel = await self._connection.channel(publisher_confirms=True)
            self._exchange = await self._channel.declare_exchange(
                f"{self._prefix}.events", aio_pika.ExchangeType.TOPIC, durable=True
            )
            await self._channel.declare_queue(self._dead_letter_queue, durable=True)
            self._declared.add(self._dead_letter_queue)
            notices = await self._connection.channel(publisher_confirms=False)
            self._notices = await notices.get_exchange(self._exchange.name, ensure=False)
        except CONNECTION_EXCEPTIONS as exc:
            await self.close(grace_seconds=0)
            raise DependencyUnavailableError(f"RabbitMQ at {self._where} is not reachable: {exc}") from exc
        self._closed = False

    def _on_lost(self, *_: Any) -> None:
        # Called on every failed reconnection attempt too: the first loss is the outage's start.
        if self._closed or self._lost_at is not None:
            return
        self._lost_at = time.monotonic()
        log.warning("RabbitMQ connection lost, reconnecting", broker=self._where)

    def _on_restored(self, *_: Any) -> None:
        lost_at, self._lost_at = self._lost_at, None
        down = round(time.monotonic() - lost_at, 1) if lost_at is not None else None
        log.warning("RabbitMQ connection restored", broker=self._where, down_seconds=down)

    async def ping(self) -> None:
        if self._closed or not self.connected:
            raise DependencyUnavailableError(f"RabbitMQ at {self._where} is not connected")

    async def close(self, grace_seconds: float = 10.0) -> None:
        self._closed = True
        await asyncio.gather(*(sub.cancel(grace_seconds) for sub in list(self._subscriptions)))
        await self._setup_channels.close()
        connection, self._connection = self._connection, None
        if connection is not None:
            # Cancels the robust connection's reconnection loop, then closes the transport.
            await bounded(connection.close(), "close the connection", self.close_timeout)

    async def _new_channel(self) -> AbstractChannel:
        if self._connection is None:
            raise DependencyUnavailableError(f"cannot open a channel on RabbitMQ at {self._where}: the bus is closed")
        return await self._connection.channel()

    @property
    def open_channels(self) -> int:
        """Channels open on the broker connection now, of every kind (the publisher's,
        consumers', declarations')."""
        transport = self._connection.transport if self._connection is not None else None
        return 0 if transport is None else sum(1 for number in transport.connection.channels if number)

    def forget(self, subscription: RabbitMQSubscription) -> None:
        """Drop a cancelled subscription."""
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)

    def _require_open(self, action: str) -> tuple[AbstractRobustConnection, AbstractChannel, AbstractExchange]:
        if self._closed or self._connection is None or self._channel is None or self._exchange is None:
            raise DependencyUnavailableError(f"cannot {action}: the event bus is closed")
        return self._connection, self._channel, self._exchange

    # -- publishing ------------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        problem = topic_problem(event.topic)
        if problem:
            raise ValueError(problem)
        _, _, exchange = self._require_open(f"publish {event.topic!r}")
        await self._confirmed(
            f"publish {event.topic!r}", lambda: exchange.publish(event_message(event), event.topic, mandatory=False)
        )

    async def notify(self, event: Event) -> None:
        problem = topic_problem(event.topic)
        if problem:
            raise ValueError(problem)
        notices = self._notices
        if self._closed or notices is None or not self.connected:
            log.debug("notice dropped: the broker is not connected", topic=event.topic)
            return
        try:
            # Written to the socket, not confirmed; bounded as a publish is, for a broker that
            # blocks its publishers (a memory alarm) stops the writes too.
            async with asyncio.timeout(self._publish_timeout):
                await notices.publish(event_message(event, persistent=False), event.topic, mandatory=False)
        except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
            log.debug("notice dropped", topic=event.topic, error=str(exc) or type(exc).__name__)

    async def _to_queue(self, queue: str, event: Event, headers: dict[str, str] | None = None) -> None:
        """Publish straight into `queue` (default exchange), confirmed."""
        _, channel, _ = self._require_open(f"publish into {queue!r}")
        outgoing = event_message(event, headers)
        await self._confirmed(f"publish into {queue!r}", lambda: channel.default_exchange.publish(outgoing, queue))

    async def _confirmed(self, action: str, publish: Callable[[], Awaitable[Any]]) -> None:
        """Run `publish` until the broker confirms it. While the connection is down, wait
        for it at most the reconnect wait (then raise: the broker is not there); once
        connected, the broker gets the publish timeout to confirm, and a publish cut off
        while the channels are being restored is tried again within that timeout."""
        connection, _, _ = self._require_open(action)
        began = time.monotonic()
        reconnected_by, retry_until = began + self._reconnect_wait, began + self._publish_timeout
        while True:
            if not connection.connected.is_set():
                try:
                    async with asyncio.timeout(max(reconnected_by - time.monotonic(), 0.0)):
                        await connection.connected.wait()
                except TimeoutError as exc:
                    raise self._unreachable(action) from exc
            try:
                async with asyncio.timeout(self._publish_timeout):
                    await publish()
                return
            except TimeoutError as exc:
                raise self._unconfirmed(action) from exc
            except CONNECTION_EXCEPTIONS as exc:
                if time.monotonic() >= retry_until or self._closed:
                    raise DependencyUnavailableError(f"cannot {action}: RabbitMQ at {self._where}: {exc}") from exc
                log.warning("publish interrupted, retrying after reconnect", action=action, error=str(exc))
                await asyncio.sleep(0.1)

    def _unreachable(self, action: str) -> DependencyUnavailableError:
        return DependencyUnavailableError(
            f"cannot {action}: RabbitMQ at {self._where} is not connected "
            f"(no reconnection within {self._reconnect_wait:g} s)"
        )

    def _unconfirmed(self, action: str) -> DependencyUnavailableError:
        return DependencyUnavailableError(
            f"cannot {action}: RabbitMQ at {self._where} did not confirm within {self._publish_timeout:g} s"
        )

    # -- consuming -------------------------------------------------------------------

    async def subscribe(
        self,
        queue: str,
        patterns: Sequence[str],
        handler: EventHandler,
        *,
        prefetch: int = 1,
        exclusive: bool = False,
    ) -> RabbitMQSubscription:
        check_patterns(patterns)
        self._require_open(f"subscribe {queue!r}")
        name = self._queue_name(queue)
        try:
            if exclusive:
                declared, release = await self._on_own_channel(name, patterns, prefetch)
            else:
                declared, release = await self._on_shared_channel(name, patterns, prefetch)
            subscription = RabbitMQSubscription(self, queue, declared, release)
            try:
                # On a shared channel, this answer also says the declarations before it worked.
                await subscription.start(lambda message: self._deliver(queue, message, handler))
            except BaseException:
                await release()
                raise
        except CONNECTION_EXCEPTIONS as exc:
            raise DependencyUnavailableError(f"cannot subscribe {queue!r} on RabbitMQ at {self._where}: {exc}") from exc
        self._subscriptions.append(subscription)
        return subscription

    async def _on_own_channel(
        self, name: str, patterns: Sequence[str], prefetch: int
    ) -> tuple[AbstractQueue, Callable[[], Awaitable[None]]]:
        """An exclusive queue, on a channel of its own that restores all of it (an exclusive
        queue, its bindings and retry queues are gone after a reconnection)."""
        _, _, exchange = self._require_open(f"subscribe {name!r}")
        channel, release = await own_channel(self._new_channel, prefetch, self.close_timeout)
        try:
            declared = await channel.declare_queue(name, exclusive=True, auto_delete=True)
            self._declared.add(name)
            self._exclusive.add(name)
            for pattern in patterns:
                await declared.bind(exchange, routing_key=pattern)
            for delay_ms in self._retry_ms:
                retry, arguments = retry_queue(name, delay_ms, exclusive=True)
                await channel.declare_queue(retry, arguments=arguments)
                self._declared.add(retry)
        except BaseException:
            await release()
            raise
        return declared, release

    async def _on_shared_channel(
        self, name: str, patterns: Sequence[str], prefetch: int
    ) -> tuple[AbstractQueue, Callable[[], Awaitable[None]]]:
        """A durable queue, on a channel shared with other consumers (rabbitmq_channels.py).
        Only the queue and its consumer are restored after a reconnection: its bindings are
        durable, and the next consume declares them again. Its retry queues are declared
        when a retry needs one (`_retry_later`): four per agent were most of the broker's
        work at a start with 1,000 agents, and most queues never retry."""
        shared = await self._consumer_channels.take(max(1, prefetch))
        try:
            declared = await shared.declare_queue(name)
            self._declared.add(name)
            channel = await shared.channel.get_underlay_channel()
            # Sent without waiting for replies: the consume that follows on this channel is
            # answered only after them, and fails if one of them was refused.
            for pattern in patterns:
                await channel.queue_bind(name, self._exchange_name, routing_key=pattern, nowait=True)
        except BaseException:
            await self._consumer_channels.give_back(shared)
            raise
        return declared, partial(self._consumer_channels.give_back, shared)

    async def declare(self, queue: str, patterns: Sequence[str]) -> None:
        check_patterns(patterns)
        self._require_open(f"declare {queue!r}")
        name = self._queue_name(queue)
        try:
            async with self._setup_channels.channel() as channel:
                underlay = await channel.get_underlay_channel()
                if patterns:  # the last binding's reply says the queue is there too
                    await underlay.queue_declare(name, durable=True, nowait=True)
                    await self._bind_all(underlay, name, patterns)
                else:
                    await underlay.queue_declare(name, durable=True)
        except CONNECTION_EXCEPTIONS as exc:
            raise DependencyUnavailableError(f"cannot declare {queue!r} on RabbitMQ at {self._where}: {exc}") from exc
        self._declared.add(name)

    async def _bind_all(self, channel: aiormq.abc.AbstractChannel, name: str, patterns: Sequence[str]) -> None:
        """Bind `patterns` to queue `name`, waiting for the last reply only: the broker
        handles a channel's methods in order, and closes the channel on a refusal (so the
        last reply never comes)."""
        for pattern in patterns[:-1]:
            await channel.queue_bind(name, self._exchange_name, routing_key=pattern, nowait=True)
        if patterns:
            await channel.queue_bind(name, self._exchange_name, routing_key=patterns[-1])

    async def bind(self, queue: str, patterns: Sequence[str]) -> None:
        await self._rebind(queue, patterns, bind=True)

    async def unbind(self, queue: str, patterns: Sequence[str]) -> None:
        await self._rebind(queue, patterns, bind=False)

    async def _rebind(self, queue: str, patterns: Sequence[str], *, bind: bool) -> None:
        verb = "bind" if bind else "unbind"
        self._require_open(f"{verb} {queue!r}")
        name = self._queue_name(queue)
        try:
            # A missing queue closes the channel that asked (and only that one).
            async with self._setup_channels.channel() as channel:
                underlay = await channel.get_underlay_channel()
                await underlay.queue_declare(name, passive=True)
                if bind:
                    await self._bind_all(underlay, name, patterns)
                for pattern in [] if bind else patterns:  # queue.unbind has no "nowait"
                    await underlay.queue_unbind(name, self._exchange_name, routing_key=pattern)
        except CONNECTION_EXCEPTIONS as exc:
            raise DependencyUnavailableError(f"cannot {verb} {queue!r} on RabbitMQ at {self._where}: {exc}") from exc

    async def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        connection, _, _ = self._require_open("count queued events")
        counted = await count_messages(connection, [self._queue_name(queue) for queue in queues], self._where)
        return dict(zip(queues, counted, strict=True))

    async def _deliver(self, queue: str, message: AbstractIncomingMessage, handler: EventHandler) -> None:
        try:
            event = decode_event(message.body)
        except ValueError as exc:
            log.error("undecodable message dead-lettered", queue=queue, error=str(exc))
            await self._settle(message, self._bury(queue, None, message.body, str(exc)))
            return
        with traced(event.trace_id):
            try:
                await handler(event)
            except Exception as exc:  # noqa: BLE001 - any handler failure is a nack
                reason = exc.message if isinstance(exc, AgentRunnerError) else f"{type(exc).__name__}: {exc}"
                await self._settle(message, self._retry_later(queue, event, reason))
            else:
                await self._settle(message, None)

    async def _settle(self, message: AbstractIncomingMessage, before_ack: Awaitable[None] | None) -> None:
        """Ack `message` once `before_ack` (a retry or dead-letter publish) is confirmed; if
        that publish fails, leave it unacked so the broker delivers it again."""
        try:
            if before_ack is not None:
                await before_ack
            await message.ack()
        except (DependencyUnavailableError, *CONNECTION_EXCEPTIONS) as exc:
            # The channel is gone: the broker redelivers the unacked message.
            log.warning("message left unacked for redelivery", error=str(exc))
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await message.nack(requeue=True)

    async def _retry_later(self, queue: str, event: Event, reason: str) -> None:
        log.warning("event handler failed", queue=queue, topic=event.topic, attempt=event.attempt, error=reason)
        if event.attempt >= self.max_attempts:
            await self._bury(queue, event, None, reason)
            return
        again = event.model_copy(update={"attempt": event.attempt + 1})
        name = self._queue_name(queue)
        retry, arguments = retry_queue(name, self._retry_ms[event.attempt - 1], exclusive=False)
        if name not in self._exclusive:
            # Each time: a retry into a queue the broker lost is dropped. A refusal: `_settle`.
            try:
                await self._setup_channels.declare_queue(retry, arguments)
            except CONNECTION_EXCEPTIONS as exc:
                raise DependencyUnavailableError(
                    f"cannot declare {retry!r} on RabbitMQ at {self._where}: {exc}"
                ) from exc
            self._declared.add(retry)
        await self._to_queue(retry, again)

    async def _bury(self, queue: str, event: Event | None, raw: bytes | None, reason: str) -> None:
        log.error("event dead-lettered", queue=queue, topic=event.topic if event else None, error=reason)
        _, channel, _ = self._require_open("dead-letter an event")
        if event is None:
            message = aio_pika.Message(
                raw or b"",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={QUEUE_HEADER: queue, ERROR_HEADER: reason[:2000]},
            )
            dead_letters = self._dead_letter_queue
            await self._confirmed("dead-letter", lambda: channel.default_exchange.publish(message, dead_letters))
            return
        await self._to_queue(self._dead_letter_queue, event, {QUEUE_HEADER: queue, ERROR_HEADER: reason[:2000]})

    # -- dead letters ----------------------------------------------------------------

    async def subscribe_dead_letters(self, handler: DeadLetterHandler) -> RabbitMQSubscription:
        self._require_open("consume dead letters")
        try:
            channel, release = await own_channel(self._new_channel, 1, self.close_timeout)
            declared = await channel.declare_queue(self._dead_letter_queue, durable=True)
        except CONNECTION_EXCEPTIONS as exc:
            raise DependencyUnavailableError(
                f"cannot consume dead letters on RabbitMQ at {self._where}: {exc}"
            ) from exc
        subscription = RabbitMQSubscription(self, "dead-letters", declared, release)
        await subscription.start(partial(take_dead_letter, handler))
        self._subscriptions.append(subscription)
        return subscription

    async def replay(self, letter: DeadLetter) -> None:
        await self._to_queue(self._queue_name(letter.queue), letter.event.model_copy(update={"attempt": 1}))
