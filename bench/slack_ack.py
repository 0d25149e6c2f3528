"""Ack latency of the Slack gateway: how long Slack waits for `POST /slack/commands` to
answer while 50 signed commands arrive at once, next to a peer doing the same acceptance
without Slack: `POST /agents/<agent>/invoke` with `"wait": 0` (record the execution with
its outbox event, route it, answer 202).

Both run against one `agentrunner up` subprocess (in-memory bus and cache), on SQLite then
on a scratch PostgreSQL database (created, migrated and dropped here), with a trivial
agent (provider `echo`); the client is this process (httpx.AsyncClient). Each
round sends `--concurrency` requests at once; `--rounds` rounds after one warm-up round.
Answers to the commands go to a loopback fake of Slack's response_url.

Slack's limit is 3 s; our target is p99 under 100 ms.

Run: .venv/bin/python bench/slack_ack.py [--concurrency 50] [--rounds 10] [--sequential 40]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.fakes, tests.e2e

from tests.conftest import POSTGRES_ADMIN_URL
from tests.e2e.platform import start_platform
from tests.fakes.slack_server import SIGNING_SECRET, FakeSlack, command_body, slack_headers

AGENT = "bench-echo"
AGENT_YAML = (
    f"name: {AGENT}\nagent_type: bench\nexecution_mode: autonomous\nllm_config: {{provider: echo, model: echo}}\n"
)


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


async def rounds(
    call: Callable[[httpx.AsyncClient, int], Awaitable[int]], base_url: str, concurrency: int, count: int
) -> tuple[list[float], list[int]]:
    latencies: list[float] = []
    statuses: list[int] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:

        async def timed(index: int) -> None:
            began = time.perf_counter()
            statuses.append(await call(http, index))
            latencies.append((time.perf_counter() - began) * 1000)

        for number in range(count + 1):
            before = len(latencies)
            await asyncio.gather(*(timed(number * concurrency + i) for i in range(concurrency)))
            if number == 0:  # warm-up: connections, first queries
                del latencies[before:], statuses[before:]
            await asyncio.sleep(0.5 if concurrency > 1 else 0.05)  # let this round's runs drain first
    return latencies, statuses


def measure(setup: str, extra_env: dict[str, str], modes: list[tuple[int, int]]) -> list[tuple[str, ...]]:
    """Rows of the table for one `agentrunner up` configured by `extra_env`: for each
    (concurrency, rounds) of `modes`, the commands then the peer's invocations."""
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as scratch, FakeSlack() as slack:
        workdir = Path(scratch)
        (workdir / "agents").mkdir()
        (workdir / "agents" / f"{AGENT}.yml").write_text(AGENT_YAML)
        env = {
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_COMMANDS": f"/ask={AGENT}",
            "LOG_LEVEL": "WARNING",
            **extra_env,
        }
        running = start_platform(workdir, env)
        offset = 0
        try:

            async def command(http: httpx.AsyncClient, index: int) -> int:
                body = command_body("/ask", f"question {index}", response_url=slack.response_url(f"b{offset + index}"))
                headers = {"content-type": "application/x-www-form-urlencoded", **slack_headers(body)}
                return (await http.post("/slack/commands", content=body, headers=headers)).status_code

            async def invoke(http: httpx.AsyncClient, index: int) -> int:
                task = {"task_data": {"prompt": f"question {index}"}, "wait": 0}
                return (await http.post(f"/agents/{AGENT}/invoke", json=task)).status_code

            for concurrency, count in modes:
                sent = (count + 1) * concurrency
                before = len(slack.messages("/response/"))
                commands = asyncio.run(rounds(command, running.url("slack"), concurrency, count))
                offset += sent
                invokes = asyncio.run(rounds(invoke, running.url("orchestrator"), concurrency, count))
                deadline = time.monotonic() + 30
                while len(slack.messages("/response/")) < before + sent and time.monotonic() < deadline:
                    time.sleep(0.1)
                answered = f"{len(slack.messages('/response/')) - before}/{sent}"
                rows.append(_row(setup, concurrency, "POST /slack/commands (signed)", commands, answered))
                rows.append(_row(setup, concurrency, "peer: POST /agents/{name}/invoke wait=0", invokes, ""))
        finally:
            running.stop()
    return rows


def _row(
    setup: str, concurrency: int, name: str, result: tuple[list[float], list[int]], answered: str
) -> tuple[str, ...]:
    latencies, statuses = result
    counts = ", ".join(f"{status}: {statuses.count(status)}" for status in sorted(set(statuses)))
    return (
        setup,
        str(concurrency),
        name,
        str(len(latencies)),
        counts,
        f"{percentile(latencies, 50):.1f}",
        f"{percentile(latencies, 99):.1f}",
        f"{max(latencies):.1f}",
        answered,
    )


def postgres_database() -> tuple[str, Callable[[], None]]:
    """A scratch PostgreSQL database migrated to the newest schema, and how to drop it."""
    name = f"agentrunner_bench_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"
    subprocess.run(
        [sys.executable, "-m", "agentrunner", "db", "upgrade"],
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        capture_output=True,
    )
    return url, lambda: asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sequential", type=int, default=40, help="requests one at a time, for the cost of one")
    args = parser.parse_args()
    modes = [(args.concurrency, args.rounds), (1, args.sequential)]
    rows = measure("embedded (SQLite)", {}, modes)
    url, drop = postgres_database()
    try:
        rows += measure("PostgreSQL", {"DATABASE_URL": url}, modes)
    finally:
        drop()
    print(
        f"# Slack ack latency: {args.concurrency} concurrent requests x {args.rounds} rounds, "
        f"then {args.sequential} one at a time; `agentrunner up` (all roles and workers in one process)"
    )
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print()
    print("| database | in flight | endpoint | requests | statuses | p50 ms | p99 ms | max ms | answered |")
    print("|---|---:|---|---:|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
