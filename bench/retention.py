"""Retention soak: a node on PostgreSQL under steady invocation load with a retention window
of a few minutes. Reports the database's size over time (it should stop growing after the
first purge) and the request latency while a purge pass runs next to the latency while none
does (the peer, in the same run), and checks that `/usage` still counts every invocation.

The node runs every role in this process (PostgreSQL on a scratch database, in-memory bus
and cache) with a trivial agent (provider `echo`). Each request is an HTTP
`POST /agents/<agent>/invoke` with `"wait": 30` and an `Idempotency-Key` of its own,
through the orchestrator's ASGI app, started at a fixed rate (not one after another: a
slow answer does not slow the load down). Every `--sample-seconds` the bench records the
total size of the database's tables (`pg_total_relation_size`, indexes and TOAST included)
and their rows. The scratch database is dropped at the end, also when the run fails.

Needs the PostgreSQL of scripts/services.sh.

Run: .venv/bin/python bench/retention.py [--minutes 30] [--rate 10] [--window-minutes 3]
     [--interval-seconds 30] [--batch-size 500] [--sample-seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from tests.conftest import POSTGRES_ADMIN_URL

from agentrunner.adapters.state.urls import run_schema_command
from agentrunner.logs import configure_logging
from agentrunner.node import Node
from agentrunner.runtime.retention import PurgeReport
from agentrunner.settings import Settings

AGENT = "bench-echo"
AGENT_YAML = (
    f"name: {AGENT}\nagent_type: bench\nexecution_mode: autonomous\nllm_config: {{provider: echo, model: echo}}\n"
)
TABLES = ["executions", "outbox", "idempotency_keys", "usage_hourly", "webhook_deliveries", "schedule_fires"]


@dataclass
class Soak:
    """What the run recorded, in seconds since its start."""

    started: float = field(default_factory=time.monotonic)
    requests: list[tuple[float, float, int]] = field(default_factory=list)  # start, latency, status
    purges: list[tuple[float, float, dict[str, int]]] = field(default_factory=list)  # start, end, deleted
    samples: list[tuple[float, int, dict[str, int]]] = field(default_factory=list)  # at, bytes, rows per table

    def now(self) -> float:
        return time.monotonic() - self.started


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile of `samples` (nan when there are none)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def timed_purges(node: Node, soak: Soak) -> None:
    """Record when each of the node's purge passes starts and ends, and what it deleted."""
    purge_once = node.retention.purge_once

    async def timed() -> PurgeReport:
        start = soak.now()
        report = await purge_once()
        soak.purges.append((start, soak.now(), {kind.value: n for kind, n in report.deleted.items()}))
        return report

    node.retention.purge_once = timed  # type: ignore[method-assign]


async def sample_sizes(database: asyncpg.Connection, soak: Soak, every: float, until: float) -> None:
    while soak.now() < until:
        size = await database.fetchval(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r'"
        )
        rows = {table: await database.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES}
        soak.samples.append((soak.now(), int(size), rows))
        await asyncio.sleep(every)


async def invoke(http: httpx.AsyncClient, soak: Soak) -> None:
    start = soak.now()
    try:
        answer = await http.post(
            f"/agents/{AGENT}/invoke",
            json={"task_data": {"prompt": "x" * 200}, "wait": 30},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        status = answer.status_code
    except httpx.HTTPError:
        status = 0
    soak.requests.append((start, soak.now() - start, status))


async def load(node: Node, soak: Soak, rate: float, until: float) -> int:
    transport = httpx.ASGITransport(app=node.apps()["orchestrator"])
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as http,
        asyncio.TaskGroup() as tg,
    ):
        sent = 0
        while soak.now() < until:
            tg.create_task(invoke(http, soak))
            sent += 1
            await asyncio.sleep(max(0.0, sent / rate - soak.now()))
    return sent


def during_purge(start: float, latency: float, purges: list[tuple[float, float, dict[str, int]]]) -> bool:
    return any(start < end and start + latency > begin for begin, end, _ in purges)


def report(soak: Soak, args: argparse.Namespace, usage_executions: int) -> None:
    print(
        f"\nretention soak: {args.minutes:g} min at {args.rate:g} invocations/s, window {args.window_minutes:g} min, "
        f"purge every {args.interval_seconds:g} s in batches of {args.batch_size}; {os.cpu_count()} cores, "
        f"Python {platform.python_version()}\n"
    )
    print("| t (min) | tables (MB) | executions | outbox | idempotency_keys | usage_hourly |")
    print("|---:|---:|---:|---:|---:|---:|")
    for at, size, rows in soak.samples:
        print(
            f"| {at / 60:.1f} | {size / 1e6:.1f} | {rows['executions']} | {rows['outbox']} | "
            f"{rows['idempotency_keys']} | {rows['usage_hourly']} |"
        )
    print("\n| purge at (min) | took (s) | deleted |")
    print("|---:|---:|---|")
    for begin, end, deleted in soak.purges:
        shown = ", ".join(f"{kind} {n}" for kind, n in deleted.items()) or "nothing"
        print(f"| {begin / 60:.1f} | {end - begin:.2f} | {shown} |")
    # The first seconds are the node's warm-up (and its first pass, at start): not compared.
    ok = [(s, lat) for s, lat, status in soak.requests if status == 200 and s >= args.warmup_seconds]
    failed = sum(1 for _, _, status in soak.requests if status != 200)
    groups = {
        "while a purge runs": [lat for s, lat in ok if during_purge(s, lat, soak.purges)],
        "no purge running": [lat for s, lat in ok if not during_purge(s, lat, soak.purges)],
    }
    print("\n| requests | count | p50 (ms) | p99 (ms) | max (ms) |")
    print("|---|---:|---:|---:|---:|")
    for name, latencies in groups.items():
        print(
            f"| {name} | {len(latencies)} | {percentile(latencies, 50) * 1000:.1f} | "
            f"{percentile(latencies, 99) * 1000:.1f} | {max(latencies, default=math.nan) * 1000:.1f} |"
        )
    answered = sum(1 for _, _, status in soak.requests if status == 200)
    print(f"\nfailed requests: {failed}; /usage counts {usage_executions} executions for {answered} answered 200")


async def main(args: argparse.Namespace) -> None:
    configure_logging("bench", "WARNING")
    name = f"agentrunner_bench_retention_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        url = f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"
        await asyncio.to_thread(run_schema_command, url, "upgrade")
        await soak_on(url, f"{base}/{name}", args)
    finally:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def soak_on(url: str, plain_url: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        agents = Path(workdir) / "agents"
        agents.mkdir()
        (agents / f"{AGENT}.yml").write_text(AGENT_YAML)
        window_seconds = args.window_minutes * 60
        settings = Settings(
            _env_file=None,
            agents_dir=agents,
            data_dir=Path(workdir),
            database_url=url,
            log_level="WARNING",
            retention_days=window_seconds / 86400,
            retention_interval_seconds=args.interval_seconds,
            retention_batch_size=args.batch_size,
            idempotency_ttl_seconds=window_seconds,
        )
        node = Node(settings)
        soak = Soak()
        timed_purges(node, soak)
        database = await asyncpg.connect(plain_url)
        try:
            async with node.running():
                soak.started = time.monotonic()
                until = args.minutes * 60
                sampler = asyncio.create_task(sample_sizes(database, soak, args.sample_seconds, until))
                await load(node, soak, args.rate, until)
                await sampler
                usage = await node.store.queries.usage()
            report(soak, args, usage.executions)
        finally:
            await database.close()


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30, help="length of the run")
    parser.add_argument("--rate", type=float, default=10, help="invocations started per second")
    parser.add_argument("--window-minutes", type=float, default=3, help="the retention window")
    parser.add_argument("--interval-seconds", type=float, default=30, help="RETENTION_INTERVAL_SECONDS")
    parser.add_argument("--batch-size", type=int, default=500, help="RETENTION_BATCH_SIZE")
    parser.add_argument("--warmup-seconds", type=float, default=30, help="requests left out of the latencies")
    parser.add_argument("--sample-seconds", type=float, default=30, help="how often the size is measured")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(arguments()))
