"""How fast events go from publish to handler on each event bus, next to raw aio-pika doing
the same thing by hand in the same run.

Backends: InMemoryEventBus (the floor: no broker, no serialisation), RabbitMQEventBus, and
raw aio-pika as the peer (robust connection, a publisher-confirms channel, a durable topic
exchange, a durable queue bound with a pattern on a consuming channel with the same
prefetch, persistent messages with an orjson body as large as the adapter's, manual ack).
Every RabbitMQ publish waits for the broker's confirm.

Latency is the handler's time minus the publish start stored in the event (time.perf_counter,
one process); events/s is the count over first publish start -> last handler call. Two
publishing styles per backend: one publisher awaiting each publish, and `--publishers` tasks
sharing the same count. Exchanges and queues get fresh uuid names and are deleted at the end,
also when a run fails.

Run: .venv/bin/python bench/bus.py [--count 5000] [--prefetch 50] [--publishers 16]
     [--payload-bytes 200] [--url amqp://guest:guest@127.0.0.1:5672/]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import platform
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, AMQPError

from agentrunner.adapters.bus.memory import InMemoryEventBus
from agentrunner.adapters.bus.rabbitmq import RabbitMQEventBus
from agentrunner.domain.event import Event, encode_event, new_id
from agentrunner.ports.bus import EventBus

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
TOPIC = "bench.order.created"
PATTERN = "bench.#"
WARM_UP = 200
PHASE_TIMEOUT = 60.0  # one style of one backend; the whole run is far below it
CONNECT_TIMEOUT = 10.0
CLOSE_GRACE = 5.0

Publish = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class Plan:
    """The same work for every backend."""

    count: int
    prefetch: int
    publishers: int
    payload_bytes: int

    def share(self, publisher: int) -> int:
        return self.count // self.publishers + (1 if publisher < self.count % self.publishers else 0)


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    backend: str
    style: str
    rate: float
    p50_ms: float
    p99_ms: float


@dataclass
class Probe:
    """What the handlers saw: one latency per event, and when the last one arrived."""

    target: int = 0
    latencies: list[float] = field(default_factory=list)
    last_at: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def expect(self, target: int) -> None:
        self.target, self.latencies, self.last_at, self.done = target, [], 0.0, asyncio.Event()

    def record(self, published_at: float) -> None:
        now = time.perf_counter()
        self.latencies.append(now - published_at)
        self.last_at = now
        if len(self.latencies) >= self.target:
            self.done.set()

    async def wait(self, what: str) -> None:
        try:
            async with asyncio.timeout(PHASE_TIMEOUT):
                await self.done.wait()
        except TimeoutError:
            raise RuntimeError(
                f"{what}: {len(self.latencies)} of {self.target} events reached the handler in {PHASE_TIMEOUT:g} s"
            ) from None


@dataclass
class Declared:
    """Every exchange and queue this run declared on the broker, to delete at the end."""

    exchanges: set[str] = field(default_factory=set)
    queues: set[str] = field(default_factory=set)

    async def delete(self, connection: AbstractConnection) -> list[str]:
        """Delete them all; returns the names that could not be deleted."""
        left: list[str] = []
        channel: AbstractChannel | None = None
        for kind, name in [("queue", q) for q in sorted(self.queues)] + [("exchange", e) for e in self.exchanges]:
            try:
                if channel is None or channel.is_closed:  # a failed delete closes the channel
                    channel = await connection.channel()
                if kind == "queue":
                    await channel.queue_delete(name, timeout=CONNECT_TIMEOUT)
                else:
                    await channel.exchange_delete(name, timeout=CONNECT_TIMEOUT)
            except (TimeoutError, AMQPError, *CONNECTION_EXCEPTIONS) as exc:
                logging.warning("could not delete %s %s: %s", kind, name, exc)
                left.append(name)
        if channel is not None and not channel.is_closed:
            await channel.close()
        return left


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile of `samples`."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def padding(target: int, count: int, extra: dict[str, Any] | None = None) -> str:
    """Filler that makes {"t", "seq", "pad"} (plus `extra`) about `target` bytes of JSON."""
    bare = len(orjson.dumps({"t": time.perf_counter(), "seq": count, "pad": "", **(extra or {})}))
    return "x" * max(0, target - bare)


# -- measuring ----------------------------------------------------------------------


async def run_style(backend: str, style: str, publishers: int, plan: Plan, probe: Probe, publish: Publish) -> Row:
    async def publisher(first: int, share: int) -> None:
        for seq in range(first, first + share):
            await publish(seq)

    probe.expect(plan.count)
    started = time.perf_counter()
    async with asyncio.timeout(PHASE_TIMEOUT), asyncio.TaskGroup() as group:
        first = 0
        for number in range(publishers):
            share = plan.count if publishers == 1 else plan.share(number)
            group.create_task(publisher(first, share))
            first += share
    await probe.wait(f"{backend} {style}")
    return Row(
        backend,
        style,
        plan.count / (probe.last_at - started),
        percentile(probe.latencies, 50) * 1000,
        percentile(probe.latencies, 99) * 1000,
    )


async def measure(backend: str, plan: Plan, probe: Probe, publish: Publish) -> list[Row]:
    probe.expect(WARM_UP)
    async with asyncio.timeout(PHASE_TIMEOUT):
        for seq in range(WARM_UP):
            await publish(seq)
    await probe.wait(f"{backend} warm-up")
    return [
        await run_style(backend, "sequential", 1, plan, probe, publish),
        await run_style(backend, f"concurrent x{plan.publishers}", plan.publishers, plan, probe, publish),
    ]


async def measure_bus(backend: str, bus: EventBus, plan: Plan, probe: Probe) -> list[Row]:
    """Subscribe one queue on a started `bus` and measure both publishing styles."""
    pad = padding(plan.payload_bytes, plan.count)
    trace_id = new_id()

    async def handler(event: Event) -> None:
        probe.record(event.payload["t"])

    async def publish(seq: int) -> None:
        started = time.perf_counter()
        await bus.publish(Event(topic=TOPIC, payload={"t": started, "seq": seq, "pad": pad}, trace_id=trace_id))

    await bus.subscribe("bench", [PATTERN], handler, prefetch=plan.prefetch)
    return await measure(backend, plan, probe, publish)


def event_bytes(plan: Plan) -> int:
    """The size of one event on the wire, as RabbitMQEventBus sends it."""
    pad = padding(plan.payload_bytes, plan.count)
    sample = Event(topic=TOPIC, payload={"t": time.perf_counter(), "seq": plan.count, "pad": pad}, trace_id=new_id())
    return len(encode_event(sample))


# -- backends -----------------------------------------------------------------------


async def bench_memory(plan: Plan, probe: Probe) -> list[Row]:
    bus = InMemoryEventBus()
    await bus.start()
    try:
        return await measure_bus("InMemoryEventBus", bus, plan, probe)
    finally:
        await bus.close(grace_seconds=CLOSE_GRACE)


async def bench_adapter(url: str, prefix: str, plan: Plan, probe: Probe, declared: Declared) -> list[Row]:
    bus = RabbitMQEventBus(url, prefix=prefix, connection_name="agentrunner-bench")
    try:
        await bus.start()
        return await measure_bus("RabbitMQEventBus", bus, plan, probe)
    finally:
        exchange, queues = bus.declared
        declared.exchanges.add(exchange)
        declared.queues.update(queues)
        await bus.close(grace_seconds=CLOSE_GRACE)


@asynccontextmanager
async def raw_peer(url: str, name: str, plan: Plan, probe: Probe, declared: Declared) -> AsyncIterator[Publish]:
    """Raw aio-pika set up as the adapter sets itself up; yields its publish."""
    pad = padding(event_bytes(plan), plan.count)
    connection = await aio_pika.connect_robust(
        url, client_properties={"connection_name": "agentrunner-bench-raw"}, timeout=CONNECT_TIMEOUT
    )
    try:
        channel = await connection.channel(publisher_confirms=True)
        declared.exchanges.add(f"{name}.events")
        exchange = await channel.declare_exchange(f"{name}.events", aio_pika.ExchangeType.TOPIC, durable=True)
        consuming = await connection.channel()
        await consuming.set_qos(prefetch_count=plan.prefetch)
        declared.queues.add(f"{name}.q.bench")
        queue = await consuming.declare_queue(f"{name}.q.bench", durable=True)
        await queue.bind(exchange, routing_key=PATTERN)

        async def on_message(message: AbstractIncomingMessage) -> None:
            probe.record(orjson.loads(message.body)["t"])
            await message.ack()

        async def publish(seq: int) -> None:
            started = time.perf_counter()
            message = aio_pika.Message(
                orjson.dumps({"t": started, "seq": seq, "pad": pad}),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=uuid.uuid4().hex,
            )
            await exchange.publish(message, TOPIC, timeout=CONNECT_TIMEOUT)

        tag = await queue.consume(on_message, no_ack=False)
        yield publish
        await queue.cancel(tag, timeout=CONNECT_TIMEOUT)
    finally:
        await connection.close()


async def bench_raw(url: str, name: str, plan: Plan, probe: Probe, declared: Declared) -> list[Row]:
    async with raw_peer(url, name, plan, probe, declared) as publish:
        return await measure("raw aio-pika", plan, probe, publish)


def server_version(connection: AbstractConnection) -> str:
    underlay = getattr(connection.transport, "connection", None)
    properties: dict[str, Any] = dict(getattr(underlay, "server_properties", None) or {})
    product, version = properties.get("product", "RabbitMQ"), properties.get("version", "?")
    return " ".join(v.decode() if isinstance(v, bytes) else str(v) for v in (product, version))


async def bench(url: str, plan: Plan) -> tuple[list[Row], str, list[str]]:
    """Every backend in turn; returns the rows, the broker's version and names left behind."""
    probe = Probe()
    rows = await bench_memory(plan, probe)
    run = f"agentrunner-bench-{uuid.uuid4().hex[:12]}"
    admin = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT)
    try:
        version = server_version(admin)
        declared = Declared()
        try:
            rows += await bench_adapter(url, f"{run}.bus", plan, probe, declared)
            rows += await bench_raw(url, f"{run}.raw", plan, probe, declared)
        finally:
            left = await declared.delete(admin)
    finally:
        await admin.close()
    return rows, version, left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000, help="events per backend and publishing style")
    parser.add_argument("--prefetch", type=int, default=50, help="unacked events a consumer holds")
    parser.add_argument("--publishers", type=int, default=16, help="publisher tasks in the concurrent style")
    parser.add_argument("--payload-bytes", type=int, default=200, help="JSON size of the event payload")
    parser.add_argument("--url", default=DEFAULT_URL, help="RabbitMQ to run on")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    plan = Plan(count=args.count, prefetch=args.prefetch, publishers=args.publishers, payload_bytes=args.payload_bytes)

    started = time.perf_counter()
    rows, version, left = asyncio.run(bench(args.url, plan))
    took = time.perf_counter() - started

    print(
        f"event bus, publish -> handler: {os.cpu_count()} cores, Python {platform.python_version()} "
        f"(asyncio loop), aio-pika {aio_pika.__version__}, {version} at {args.url.split('@')[-1]}"
    )
    print(
        f"{plan.count} events per row after {WARM_UP} warm-up, prefetch {plan.prefetch}, "
        f"payload ~{plan.payload_bytes} B JSON (~{event_bytes(plan)} B on the wire, raw peer the same), "
        f"persistent + publisher confirms; run took {took:.1f} s"
    )
    if left:
        print(f"NOT deleted on the broker: {', '.join(left)}")
    print()
    print(f"{'backend':18} {'style':16} {'events/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
    for row in sorted(rows, key=lambda row: row.style != "sequential"):
        print(f"{row.backend:18} {row.style:16} {row.rate:10.0f} {row.p50_ms:9.2f} {row.p99_ms:9.2f}")


if __name__ == "__main__":
    main()
