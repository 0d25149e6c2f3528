"""How fast the state store writes and reads executions, on PostgreSQL and on SQLite, next to
the bare driver (asyncpg, stdlib sqlite3) doing the same single-row work in the same run.

Measures, per backend: sequential create_execution + get_execution (p50/p99), sequential
save_execution (an update, p50/p99), and `--writers` concurrent writers sharing one store
(executions/s and per-write p50/p99). PostgreSQL work happens in a scratch database created
and dropped here; SQLite in a temporary file (WAL, synchronous=NORMAL, as the store uses).

Run: .venv/bin/python bench/state.py [--n 500] [--writers 8] [--total 4000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import URL, make_url

from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.execution import Execution, ExecutionStatus, utcnow

DEFAULT_POSTGRES = "postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/agentrunner_test"
WARM_UP = 20

# The executions table of the store, as plain DDL for the bare-driver peer.
RAW_COLUMNS = (
    "execution_id, agent, status, input, session_id, output, error, input_tokens, output_tokens, "
    "cost_usd, attempts, provider, model, trace_id, created_at, started_at, finished_at"
)
PG_TABLE = """
CREATE TABLE raw_executions (
    execution_id varchar(64) PRIMARY KEY, agent varchar(128) NOT NULL, status varchar(16) NOT NULL,
    input json NOT NULL, session_id varchar(256), output text, error json, input_tokens integer NOT NULL,
    output_tokens integer NOT NULL, cost_usd double precision, attempts integer NOT NULL, provider varchar(32),
    model varchar(128), trace_id varchar(128) NOT NULL, created_at timestamptz NOT NULL,
    started_at timestamptz, finished_at timestamptz
);
CREATE INDEX ix_raw_created ON raw_executions (created_at, execution_id);
CREATE INDEX ix_raw_agent_created ON raw_executions (agent, created_at);
CREATE INDEX ix_raw_status ON raw_executions (status);
"""
SQLITE_TABLE = PG_TABLE.replace("double precision", "real").replace("timestamptz", "datetime")
PG_INSERT = f"INSERT INTO raw_executions ({RAW_COLUMNS}) VALUES ({', '.join(f'${i}' for i in range(1, 18))})"
PG_SELECT = f"SELECT {RAW_COLUMNS} FROM raw_executions WHERE execution_id = $1"
PG_UPDATE = "UPDATE raw_executions SET status = $2, output = $3, finished_at = $4 WHERE execution_id = $1"
SQLITE_INSERT = f"INSERT INTO raw_executions ({RAW_COLUMNS}) VALUES ({', '.join('?' * 17)})"
SQLITE_SELECT = PG_SELECT.replace("$1", "?")
SQLITE_UPDATE = "UPDATE raw_executions SET status = ?, output = ?, finished_at = ? WHERE execution_id = ?"


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    backend: str
    measure: str
    value: float
    unit: str


@dataclass(frozen=True)
class Plan:
    """How much work each measure does."""

    n: int
    writers: int
    total: int

    def share(self, writer: int) -> int:
        return self.total // self.writers + (1 if writer < self.total % self.writers else 0)


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile of `samples`."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def execution(execution_id: str) -> Execution:
    return Execution(
        execution_id=execution_id,
        agent="bench-helper",
        status=ExecutionStatus.RUNNING,
        input={"prompt": f"summarise ticket {execution_id}", "ticket": {"id": execution_id, "priority": "p2"}},
        session_id="bench-session",
        trace_id=f"trace-{execution_id}",
        provider="scripted",
        model="script-1",
        attempts=1,
        started_at=utcnow(),
    )


def finished(item: Execution) -> Execution:
    return item.model_copy(
        update={"status": ExecutionStatus.SUCCEEDED, "output": f"done: {item.execution_id}", "finished_at": utcnow()}
    )


def raw_values(item: Execution) -> tuple[Any, ...]:
    return (
        item.execution_id,
        item.agent,
        item.status.value,
        json.dumps(item.input),
        item.session_id,
        item.output,
        None,
        item.usage.input_tokens,
        item.usage.output_tokens,
        item.cost_usd,
        item.attempts,
        item.provider,
        item.model,
        item.trace_id,
        item.created_at,
        item.started_at,
        item.finished_at,
    )


def ms(seconds: float) -> float:
    return seconds * 1000


async def timed(operation: Awaitable[object]) -> float:
    # A coroutine runs nothing until awaited, so the clock covers all of its work.
    started = time.perf_counter()
    await operation
    return time.perf_counter() - started


def latency_rows(backend: str, measure: str, samples: list[float], *, p99: bool = True) -> list[Row]:
    rows = [Row(backend, f"{measure} p50", ms(percentile(samples, 50)), "ms")]
    if p99:
        rows.append(Row(backend, f"{measure} p99", ms(percentile(samples, 99)), "ms"))
    return rows


async def concurrent_rows(backend: str, plan: Plan, write: Callable[[str], Awaitable[object]]) -> list[Row]:
    """`plan.writers` tasks, each writing its share of `plan.total` one after the other."""
    latencies: list[float] = []

    async def writer(number: int) -> None:
        for i in range(plan.share(number)):
            latencies.append(await timed(write(f"c-{number}-{i}")))

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for number in range(plan.writers):
            group.create_task(writer(number))
    wall = time.perf_counter() - started
    label = f"{plan.writers} writers:"
    return [
        Row(backend, f"{label} throughput", plan.total / wall, "executions/s"),
        *latency_rows(backend, f"{label} write", latencies),
    ]


# -- the state store ------------------------------------------------------------------


async def bench_store(backend: str, url: str, plan: Plan) -> list[Row]:
    store = SQLStateStore(url, migrate=True)
    await store.start()
    try:
        for i in range(WARM_UP):
            await store.create_execution(execution(f"warm-{i}"))
            await store.get_execution(f"warm-{i}")
        items = [execution(f"s-{i}") for i in range(plan.n)]

        async def write_read(item: Execution) -> None:
            await store.create_execution(item)
            await store.get_execution(item.execution_id)

        sequential = [await timed(write_read(item)) for item in items]
        updates = [await timed(store.save_execution(finished(item))) for item in items]
        concurrent = await concurrent_rows(
            backend, plan, lambda execution_id: store.create_execution(execution(execution_id))
        )
    finally:
        await store.close()
    return [
        *latency_rows(backend, "write+read", sequential),
        *latency_rows(backend, "update", updates),
        *concurrent,
    ]


# -- bare drivers ---------------------------------------------------------------------


async def bench_asyncpg(backend: str, dsn: str, plan: Plan) -> list[Row]:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(PG_TABLE)
        for i in range(WARM_UP):
            await connection.execute(PG_INSERT, *raw_values(execution(f"warm-{i}")))
            await connection.fetchrow(PG_SELECT, f"warm-{i}")
        items = [execution(f"s-{i}") for i in range(plan.n)]

        async def write_read(item: Execution) -> None:
            await connection.execute(PG_INSERT, *raw_values(item))
            await connection.fetchrow(PG_SELECT, item.execution_id)

        async def update(item: Execution) -> None:
            done = finished(item)
            await connection.execute(PG_UPDATE, done.execution_id, done.status.value, done.output, done.finished_at)

        sequential = [await timed(write_read(item)) for item in items]
        updates = [await timed(update(item)) for item in items]
    finally:
        await connection.close()

    async with asyncpg.create_pool(dsn, min_size=plan.writers, max_size=plan.writers) as pool:

        async def write(execution_id: str) -> None:
            async with pool.acquire() as pooled:
                await pooled.execute(PG_INSERT, *raw_values(execution(execution_id)))

        concurrent = await concurrent_rows(backend, plan, write)
    return [
        *latency_rows(backend, "write+read", sequential),
        *latency_rows(backend, "update", updates),
        *concurrent,
    ]


def bench_sqlite3(backend: str, path: Path, plan: Plan) -> list[Row]:
    """The stdlib driver, synchronous, on one connection: the floor for SQLite."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(SQLITE_TABLE)

        def row(item: Execution) -> tuple[Any, ...]:
            return tuple(v.isoformat() if hasattr(v, "isoformat") else v for v in raw_values(item))

        def write_read(item: Execution) -> float:
            started = time.perf_counter()
            connection.execute(SQLITE_INSERT, row(item))
            connection.commit()
            connection.execute(SQLITE_SELECT, (item.execution_id,)).fetchone()
            return time.perf_counter() - started

        def update(item: Execution) -> float:
            done = finished(item)
            started = time.perf_counter()
            finished_at = done.finished_at.isoformat() if done.finished_at else None
            connection.execute(SQLITE_UPDATE, (done.status.value, done.output, finished_at, done.execution_id))
            connection.commit()
            return time.perf_counter() - started

        for i in range(WARM_UP):
            write_read(execution(f"warm-{i}"))
        items = [execution(f"s-{i}") for i in range(plan.n)]
        sequential = [write_read(item) for item in items]
        updates = [update(item) for item in items]
    finally:
        connection.close()
    return [*latency_rows(backend, "write+read", sequential), *latency_rows(backend, "update", updates)]


# -- databases ------------------------------------------------------------------------


@asynccontextmanager
async def scratch_postgres(url: str) -> AsyncIterator[tuple[URL, str]]:
    """A database of the bench's own on the server at `url`, dropped afterwards; yields its
    SQLAlchemy URL and its asyncpg DSN."""
    admin = make_url(url).set(drivername="postgresql")
    name = f"agentrunner_bench_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
        scratch = admin.set(database=name)
        try:
            yield scratch.set(drivername="postgresql+asyncpg"), scratch.render_as_string(hide_password=False)
        finally:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@contextmanager
def scratch_sqlite() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="agentrunner-bench-") as folder:
        yield Path(folder)


async def bench_postgres(url: str, plan: Plan) -> tuple[list[Row], str]:
    async with scratch_postgres(url) as (store_url, dsn):
        connection = await asyncpg.connect(dsn)
        try:
            version = await connection.fetchval("SHOW server_version")
        finally:
            await connection.close()
        rows = await bench_store("postgresql / SQLStateStore", store_url.render_as_string(hide_password=False), plan)
        rows += await bench_asyncpg("postgresql / asyncpg", dsn, plan)
    where = make_url(url)
    return rows, f"PostgreSQL {version} at {where.host}:{where.port or 5432} (scratch database, dropped)"


def interleave(rows: list[Row]) -> list[Row]:
    """Each measure's store row next to its driver row, in the order measured."""
    measures = list(dict.fromkeys(row.measure for row in rows))
    return sorted(rows, key=lambda row: measures.index(row.measure))


def print_table(title: list[str], rows: list[Row]) -> None:
    for line in title:
        print(line)
    print()
    print(f"{'backend':28} {'measure':28} {'value':>10}  unit")
    for row in rows:
        print(f"{row.backend:28} {row.measure:28} {row.value:10.2f}  {row.unit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server to create the scratch database on")
    parser.add_argument("--n", type=int, default=500, help="sequential operations per latency measure")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers sharing one store")
    parser.add_argument("--total", type=int, default=4000, help="executions the concurrent writers create")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    plan = Plan(n=args.n, writers=args.writers, total=args.total)

    postgres_rows, postgres = asyncio.run(bench_postgres(args.postgres, plan))
    with scratch_sqlite() as folder:
        sqlite_rows = asyncio.run(
            bench_store("sqlite / SQLStateStore", f"sqlite+aiosqlite:///{folder / 'store.db'}", plan)
        )
        sqlite_rows += bench_sqlite3("sqlite / sqlite3", folder / "raw.db", plan)

    print_table(
        [
            f"state store vs bare driver: {plan.n} sequential operations per latency, "
            f"{plan.writers} concurrent writers creating {plan.total} executions",
            f"{postgres}; SQLite {sqlite3.sqlite_version} in a temp file (WAL, synchronous=NORMAL)",
        ],
        interleave(postgres_rows) + interleave(sqlite_rows),
    )


if __name__ == "__main__":
    main()
