"""What the usage buckets cost the write path (migration 0020): executions ended by 16
concurrent connections, as workers end them (one autocommit UPDATE each, conditional on
the execution being unfinished), with the buckets' triggers on and off in alternating
rounds, in a scratch PostgreSQL database at the newest schema. All ends of one round are
of ONE agent and tenant, the worst case: they all update the same hourly and daily rows.

Prints ends/s, latency p50/p99 and PostgreSQL CPU per end (the connections' backends, from
/proc), per mode, and the load average.

`--rate 150` paces the ends (about what the distributed mode runs, bench/peers.py) instead
of the worst case of ends back to back.

Run: .venv/bin/python bench/usage_writes.py [--ends 3000] [--rounds 3] [--concurrency 16] [--rate 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
from bench.invoke import percentile

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")

_QUEUE = """
INSERT INTO executions (execution_id, agent, status, input, input_tokens, output_tokens, attempts,
                        tenant, chain_depth, trace_id, created_at)
SELECT $1 || i, 'writer', 'queued', '{}'::json, 0, 0, 0, 'acme', 0, 't', now()
FROM generate_series(1, $2::int) AS i
"""
_END = """
UPDATE executions SET status = 'succeeded', input_tokens = 120, output_tokens = 40, cost_usd = 0.00042,
                      finished_at = now()
WHERE execution_id = $1 AND status IN ('queued', 'running')
"""


def _load() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


async def _round(
    dsn: str, ends: int, concurrency: int, triggers: bool, rate: float
) -> tuple[float, float, float, float]:
    """ends/s, p50 ms, p99 ms, PostgreSQL CPU ms per end."""
    prefix = uuid.uuid4().hex[:8]
    setup = await asyncpg.connect(dsn)
    try:
        await setup.execute(f"ALTER TABLE executions {'ENABLE' if triggers else 'DISABLE'} TRIGGER USER")
        await setup.execute(_QUEUE, prefix, ends)
    finally:
        await setup.close()
    connections = [await asyncpg.connect(dsn) for _ in range(concurrency)]
    pids = [await c.fetchval("SELECT pg_backend_pid()") for c in connections]
    ids = [f"{prefix}{i}" for i in range(1, ends + 1)]
    latencies: list[float] = []

    async def worker(connection: asyncpg.Connection, mine: list[str], first: int) -> None:
        for n, execution_id in enumerate(mine):
            if rate:  # the n-th end of this worker is due at its place in a paced stream
                await asyncio.sleep(max(0.0, begin + (first + n * concurrency) / rate - time.perf_counter()))
            started = time.perf_counter()
            await connection.execute(_END, execution_id)
            latencies.append(time.perf_counter() - started)

    cpu = _cpu_seconds(pids)
    begin = time.perf_counter()
    await asyncio.gather(*(worker(c, ids[i::concurrency], i) for i, c in enumerate(connections)))
    elapsed = time.perf_counter() - begin
    cpu = _cpu_seconds(pids) - cpu
    for connection in connections:
        await connection.close()
    return ends / elapsed, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000, cpu / ends * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--ends", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0, help="ends/s in all (0: as fast as they go)")
    parser.add_argument("--postgres", default="postgresql://postgres:postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    base = args.postgres.rsplit("/", 1)[0]
    database = f"agentrunner_usage_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.postgres)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        env = dict(os.environ, DATABASE_URL=f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{database}")
        env["PYTHONPATH"] = f"{REPO / 'src'}:{REPO}"
        upgrade = [sys.executable, "-m", "agentrunner", "db", "upgrade"]
        subprocess.run(upgrade, env=env, check=True, capture_output=True, timeout=300)  # noqa: ASYNC221 - setup
        dsn = f"{base}/{database}"
        print(f"load before: {_load()}")
        results: dict[str, list[tuple[float, float, float, float]]] = {"triggers on": [], "triggers off": []}
        for _ in range(args.rounds):
            for mode, rounds in results.items():
                rounds.append(await _round(dsn, args.ends, args.concurrency, mode == "triggers on", args.rate))
        print(f"load after: {_load()}")
        print("| mode | ends/s | p50 ms | p99 ms | PostgreSQL CPU ms/end |")
        print("|---|---|---|---|---|")
        for mode, rounds in results.items():
            for rate, p50, p99, cpu in rounds:
                print(f"| {mode} | {rate:.0f} | {p50:.2f} | {p99:.2f} | {cpu:.3f} |")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
