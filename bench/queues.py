"""What the queue report costs a scrape (issue 26, item 4): `/metrics` and `GET /queues` read
the backlog of every agent (`Backlog.backlog`: one grouped query over the unfinished
executions) on top of the bus's queue depths, which `/metrics` read before. On a scratch
PostgreSQL database holding a history of `--executions` ended executions over 40 agents
(bench/scale.py's distribution) plus `--backlog` queued ones of one agent, p50 and p99 of:

- the backlog read of the 40 agents (new on every scrape);
- the queue depths of the 40 agents' queues on RabbitMQ (what a scrape already did: the peer);
- the dashboard's list of queued executions, a page of 50 (an existing query on the same rows).

The database is created and dropped by this run; the broker queues live under a prefix of
their own and are deleted afterwards.

Run: .venv/bin/python bench/queues.py [--executions 200000] [--backlog 10000] [--reads 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from bench.invoke import delete_broker_names, percentile
from bench.scale import AGENTS, fill

from agentrunner.adapters.bus.rabbitmq import RabbitMQEventBus
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.execution import ExecutionStatus
from agentrunner.runtime.topics import agent_queue

_BACKLOG = """
INSERT INTO executions (execution_id, agent, status, input, input_tokens, output_tokens, attempts, chain_depth,
                        trace_id, created_at)
SELECT 'backlog-' || i, 'agent-0', 'queued', '{"prompt": "waiting"}'::json, 0, 0, 0, 0, 'backlog-' || i,
       now() - interval '1 second' * i
FROM generate_series(1, $1::int) AS i
"""


async def timed(read: Callable[[], Awaitable[object]], reads: int) -> tuple[float, float]:
    """p50 and p99 in ms of `reads` calls of `read`, one at a time, after 10 unmeasured."""
    for _ in range(10):
        await read()
    spent = []
    for _ in range(reads):
        started = time.perf_counter()
        await read()
        spent.append((time.perf_counter() - started) * 1000)
    return percentile(spent, 50), percentile(spent, 99)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--executions", type=int, default=200_000)
    parser.add_argument("--backlog", type=int, default=10_000, help="queued executions of one agent")
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--postgres", default="postgresql://postgres:postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    args = parser.parse_args()

    base = args.postgres.rsplit("/", 1)[0]
    database = f"agentrunner_queues_{uuid.uuid4().hex[:8]}"
    prefix = f"agentrunner-bench-{database}"
    admin = await asyncpg.connect(args.postgres, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    agents = [f"agent-{number}" for number in range(AGENTS)]
    store = SQLStateStore(f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{database}")
    bus = RabbitMQEventBus(args.rabbitmq, prefix=prefix)
    try:
        await store.start()  # migrates the new database
        seconds = await fill(f"{base}/{database}", args.executions, 1)
        connection = await asyncpg.connect(f"{base}/{database}", timeout=10)
        try:
            await connection.execute(_BACKLOG, args.backlog)
            await connection.execute("VACUUM ANALYZE executions")
        finally:
            await connection.close()
        print(f"filled {args.executions} + {args.backlog} queued executions in {seconds:.0f} s", flush=True)
        await bus.start()
        for agent in agents:
            await bus.declare(agent_queue(agent), [f"invoke.{agent}"])
        load = os.getloadavg()
        figures = {
            "backlog of 40 agents (new per scrape)": await timed(lambda: store.backlog(agents), args.reads),
            "queue depths of 40 agents, RabbitMQ (peer)": await timed(
                lambda: bus.queue_depths([agent_queue(a) for a in agents]), args.reads
            ),
            "queued executions, a page of 50 (peer)": await timed(
                lambda: store.list_executions(status=ExecutionStatus.QUEUED, limit=50), args.reads
            ),
        }
        backlog = (await store.backlog(["agent-0"]))["agent-0"]
        shown = " ".join(f"{value:.2f}" for value in load)
        print(f"\nload (1, 5, 15 min) before measuring: {shown}; agent-0 queued: {backlog.queued}")
        print("| read | p50 ms | p99 ms |\n|---|---|---|")
        for name, (p50, p99) in figures.items():
            print(f"| {name} | {p50:.2f} | {p99:.2f} |")
    finally:
        await bus.close()
        await store.close()
        left = await delete_broker_names(args.rabbitmq, [f"{prefix}."], [f"{prefix}.events"])
        if left:
            print(f"left on the broker: {left}")
        admin = await asyncpg.connect(args.postgres, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
