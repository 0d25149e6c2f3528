"""The floor under agentrunner distributed's CPU per job (issue 23): what the durable work of
one invocation costs on this machine with the drivers alone, no agentrunner around them.

Each operation one invocation makes on the services is run on its own, `--total` times
with `--concurrency` in flight, and its CPU summed over this process and the services
(PostgreSQL's backends of a scratch database, RabbitMQ, Redis; bench/peers_cpu.py):

- a PostgreSQL statement in autocommit (an execution-sized row: INSERT, or UPDATE ...
  RETURNING), asyncpg with a prepared statement;
- a confirmed, persistent RabbitMQ publish into a durable queue, consumed and acked by
  another connection (aio-pika, prefetch 10);
- an unroutable confirmed publish (no queue bound: what `agent.output` costs with no chain);
- a Redis SET and a GET.

Then the floor of one invocation, from the counts agentrunner makes per job (printed, as
`--statements`, `--messages`, `--unrouted` and `--redis` say; defaults are today's:
create, start, end and about a fifth of a batched mark; the invocation and the end
consumed, the output unrouted; the end cached then read), next to nothing for HTTP,
JSON or the event loop: the rest of bench/peers.py's figure is agentrunner's own Python.

Then the same operations one at a time (`--sequential` calls each), for the floor under
a sequential invocation's latency: what one invocation waits for in a row is three
statements (create, start, end: each a commit), two messages (the invocation, then the
end, each published and delivered) and a Redis SET then GET (the end cached, then read
by the caller's waiter); the mark and the output's publish are off that path.

Run: .venv/bin/python bench/peers_floor.py [--total 2000] [--concurrency 16] [--sequential 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg
import redis.asyncio as aioredis

if __package__ in (None, ""):  # run as a script: `bench.*` is read from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers_cpu as cpu
from bench.invoke import percentile

ROW = json.dumps({"prompt": "x" * 200, "output": "y" * 400, "usage": {"input_tokens": 10, "output_tokens": 20}})
BODY = ROW.encode()


@dataclass(frozen=True)
class Spent:
    """What one kind of call cost: CPU ms per call by process kind, and its median wall time."""

    cpu_ms: dict[str, float]
    p50_ms: float

    @property
    def cpu_total_ms(self) -> float:
        return sum(self.cpu_ms.values())


async def _spend(
    name: str, kinds: dict[str, cpu.Kind], total: int, concurrency: int, one: Callable[[int], Awaitable[None]]
) -> Spent:
    """`one(i)` for i in range(total), `concurrency` at a time."""
    counter = iter(range(total))
    took: list[float] = []

    async def caller() -> None:
        for i in counter:
            began = time.perf_counter()
            await one(i)
            took.append(time.perf_counter() - began)

    before, began = cpu.sample(kinds), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed, used = time.perf_counter() - began, cpu.spent(before, cpu.sample(kinds))
    per_call = {kind: seconds * 1000 / total for kind, seconds in used.items()}
    spent = Spent(per_call, percentile(took, 50) * 1000)
    shown = ", ".join(f"{kind} {ms:.3f}" for kind, ms in per_call.items())
    print(
        f"{name} ({concurrency} in flight): {spent.cpu_total_ms:.3f} ms CPU per call ({shown}); "
        f"{total / elapsed:.0f}/s, p50 {spent.p50_ms:.3f} ms",
        flush=True,
    )
    return spent


async def postgres_floor(admin: str, total: int, concurrency: int) -> tuple[Spent, Spent]:
    """One autocommit INSERT, and one UPDATE ... RETURNING."""
    database = f"agentrunner_bench_floor_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(admin, timeout=10)
    try:
        await connection.execute(f'CREATE DATABASE "{database}"')
    finally:
        await connection.close()
    url = f"{admin.rsplit('/', 1)[0]}/{database}"
    try:
        pool = await asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency)
        try:
            await pool.execute("CREATE TABLE rows (id text PRIMARY KEY, status text, body jsonb, n int DEFAULT 0)")
            kinds = {"bench": lambda: {os.getpid()}, "postgresql": cpu.postgres({database})}

            async def insert(i: int) -> None:
                await pool.execute("INSERT INTO rows (id, status, body) VALUES ($1, 'queued', $2)", str(i), ROW)

            async def update(i: int) -> None:
                await pool.fetchrow(
                    "UPDATE rows SET status = 'running', n = n + 1 WHERE id = $1 AND status IN ('queued', 'running') "
                    "RETURNING *",
                    str(i),
                )

            inserted = await _spend("postgresql INSERT", kinds, total, concurrency, insert)
            updated = await _spend("postgresql UPDATE RETURNING", kinds, total, concurrency, update)
        finally:
            await pool.close()
    finally:
        connection = await asyncpg.connect(admin, timeout=10)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await connection.close()
    return inserted, updated


async def rabbitmq_floor(url: str, total: int, concurrency: int) -> tuple[Spent, Spent]:
    """One confirmed persistent message published, consumed and acked (its time: until
    both the confirm and the delivery arrived); one confirmed publish no queue is bound for."""
    name = f"agentrunner-bench-floor-{uuid.uuid4().hex[:12]}"
    publisher = await aio_pika.connect(url)
    consumer = await aio_pika.connect(url)
    try:
        channel = await publisher.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, auto_delete=True)
        consuming = await consumer.channel()
        await consuming.set_qos(prefetch_count=10)
        queue = await consuming.declare_queue(name, durable=True)
        await queue.bind(name, routing_key="routed.#")
        received: set[int] = set()
        waiting: dict[int, asyncio.Future[None]] = {}

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            key = int(message.message_id or 0)
            received.add(key)
            if key in waiting:
                waiting.pop(key).set_result(None)

        tag = await queue.consume(on_message)
        kinds = {"bench": lambda: {os.getpid()}, "rabbitmq": cpu.rabbitmq()}

        async def routed(i: int) -> None:
            arrived = waiting[i] = asyncio.get_running_loop().create_future()
            message = aio_pika.Message(BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(i))
            await exchange.publish(message, "routed.job", mandatory=False)
            if i not in received:
                await asyncio.wait_for(arrived, 30)

        async def unrouted(i: int) -> None:
            message = aio_pika.Message(BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(i))
            await exchange.publish(message, "nobody.listens", mandatory=False)

        consumed = await _spend("rabbitmq publish + consume + ack", kinds, total, concurrency, routed)
        dropped = await _spend("rabbitmq publish, unrouted", kinds, total, concurrency, unrouted)
        await queue.cancel(tag)  # before the delete: the broker would cancel it, and aio-pika log that
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await consumer.close()
        await publisher.close()
    return consumed, dropped


async def redis_floor(url: str, total: int, concurrency: int) -> Spent:
    """One SET (with a TTL) and one GET of an execution-sized value."""
    prefix = f"agentrunner-bench-floor-{uuid.uuid4().hex[:12]}:"
    client = aioredis.from_url(url, max_connections=concurrency)
    try:
        kinds = {"bench": lambda: {os.getpid()}, "redis": cpu.redis()}

        async def set_then_get(i: int) -> None:
            await client.set(f"{prefix}{i}", BODY, ex=60)
            await client.get(f"{prefix}{i}")

        both = await _spend("redis SET + GET", kinds, total, concurrency, set_then_get)
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()
    return both


async def main(args: argparse.Namespace) -> None:
    print(f"idle check: {(await cpu.idleness({})).describe()}", flush=True)
    insert, update = await postgres_floor(args.postgres, args.total, args.concurrency)
    consumed, unrouted = await rabbitmq_floor(args.rabbitmq, args.total, args.concurrency)
    cache = await redis_floor(args.redis_url, args.total, args.concurrency)
    statement = (insert.cpu_total_ms + update.cpu_total_ms) / 2
    floor = (
        args.statements * statement
        + args.messages * consumed.cpu_total_ms
        + args.unrouted * unrouted.cpu_total_ms
        + args.redis * cache.cpu_total_ms
    )
    print(
        f"\nfloor of one invocation: {args.statements:g} statements x {statement:.3f} + {args.messages:g} messages "
        f"consumed x {consumed.cpu_total_ms:.3f} + {args.unrouted:g} unrouted x {unrouted.cpu_total_ms:.3f} + "
        f"{args.redis:g} x Redis SET+GET {cache.cpu_total_ms:.3f} = {floor:.2f} ms CPU "
        "(drivers and services alone; no HTTP, no agentrunner)"
    )
    if args.sequential:
        insert, update = await postgres_floor(args.postgres, args.sequential, 1)
        consumed, _ = await rabbitmq_floor(args.rabbitmq, args.sequential, 1)
        cache = await redis_floor(args.redis_url, args.sequential, 1)
        wait = insert.p50_ms + 2 * update.p50_ms + 2 * consumed.p50_ms + cache.p50_ms
        print(
            f"\nfloor of a sequential invocation's latency: INSERT {insert.p50_ms:.3f} + 2 x UPDATE "
            f"{update.p50_ms:.3f} + 2 x message {consumed.p50_ms:.3f} + Redis SET+GET {cache.p50_ms:.3f} = "
            f"{wait:.2f} ms (p50s, one at a time; no HTTP, no agentrunner)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total", type=int, default=2000, help="calls per operation")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sequential", type=int, default=300, help="calls per operation one at a time (0: none)")
    parser.add_argument("--statements", type=float, default=3.2, help="PostgreSQL statements per invocation")
    parser.add_argument("--messages", type=float, default=2.0, help="messages consumed per invocation")
    parser.add_argument("--unrouted", type=float, default=1.0, help="publishes no queue takes per invocation")
    parser.add_argument("--redis", type=float, default=1.0, help="Redis SET + GET pairs per invocation")
    parser.add_argument("--postgres", default="postgresql://postgres:postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis-url", dest="redis_url", default="redis://127.0.0.1:6379/0")
    parsed = parser.parse_args()
    asyncio.run(main(parsed))
