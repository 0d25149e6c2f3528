"""Ack latency of the Slack gateway: how long Slack waits for `POST /slack/commands` to
answer while 50 signed commands arrive at once, next to a peer doing the same acceptance
without Slack: `POST /agents/<agent>/invoke` with `"wait": 0` (record the execution with
its outbox event, route it, answer 202).

Setups: `agentrunner up` (every role and the workers in one process, in-memory bus and
cache) on SQLite, then on a scratch PostgreSQL database (created, migrated and dropped
here); then distributed as deployed: `serve slack`, `serve orchestrator` and `serve
autonomous` as three processes on that PostgreSQL, RabbitMQ and Redis (queues, exchange and
keys deleted afterwards). A trivial agent (provider `echo`); the client is this process
(httpx.AsyncClient). Each round sends `--concurrency` requests at once; `--rounds` rounds
after one warm-up round.
Answers to the commands go to a loopback fake of Slack's response_url, in a process of its
own (as Slack's servers are not in the load generator's).

Slack's limit is 3 s; our target is p99 under 100 ms.

Run: .venv/bin/python bench/slack_ack.py [--concurrency 50] [--rounds 10] [--sequential 40]
     [--client aiohttp|httpx] [--setups sqlite,postgres,distributed]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.fakes, tests.e2e

from bench.invoke import Processes, collector_paused, delete_broker_names, delete_redis_keys, free_port, wait_ready
from tests.conftest import POSTGRES_ADMIN_URL
from tests.contract.conftest import RABBITMQ_URL, REDIS_URL
from tests.e2e.platform import start_platform
from tests.fakes.slack_server import SIGNING_SECRET, FakeSlack, command_body, slack_headers

SLACK_ENV = {"SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_COMMANDS": "/ask=bench-echo", "LOG_LEVEL": "WARNING"}
AGENT = "bench-echo"
AGENT_YAML = (
    f"name: {AGENT}\nagent_type: bench\nexecution_mode: autonomous\nllm_config: {{provider: echo, model: echo}}\n"
)


class SlackElsewhere:
    """The fake Slack that takes the answers (response_url posts) in a process of its own,
    as Slack's servers are: in the load generator's process, its threads' HTTP parsing held
    the interpreter while acks waited to be read, and that was counted as ack latency."""

    def __enter__(self) -> SlackElsewhere:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_serve_slack, args=(child,), daemon=True)
        self._process.start()
        self._base_url: str = self._pipe.recv()
        return self

    def __exit__(self, *_: object) -> None:
        self._pipe.send(("stop", ""))
        self._process.join(10)

    def response_url(self, name: str) -> str:
        return f"{self._base_url}/response/{name}"

    def count(self, path_part: str) -> int:
        """How many answers Slack took whose path contains `path_part`."""
        self._pipe.send(("count", path_part))
        count: int = self._pipe.recv()
        return count


def _serve_slack(pipe: Connection) -> None:
    with FakeSlack() as slack:
        pipe.send(slack.base_url)
        while (request := pipe.recv())[0] == "count":
            pipe.send(len(slack.messages(request[1])))


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


Request = tuple[str, bytes, dict[str, str]]  # path, body, headers


async def rounds(
    request: Callable[[int], Request], base_url: str, concurrency: int, count: int, client: str
) -> tuple[list[float], list[int | str]]:
    """Latencies (ms) of the requests answered, and every status (or transport error).

    `client`: aiohttp (default: its C parser keeps the load generator's own CPU, which
    shares this machine's 2 cores with the server, small, as Slack's servers cost us none)
    or httpx (heavier; what the earlier runs used)."""
    latencies: list[float] = []
    statuses: list[int | str] = []
    async with contextlib.AsyncExitStack() as stack:
        if client == "httpx":
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            hx = await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits))

            async def post(path: str, body: bytes, headers: dict[str, str]) -> int:
                return (await hx.post(path, content=body, headers=headers)).status_code
        else:
            connector = aiohttp.TCPConnector(limit=concurrency)
            ah = await stack.enter_async_context(
                aiohttp.ClientSession(base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=30))
            )

            async def post(path: str, body: bytes, headers: dict[str, str]) -> int:
                async with ah.post(path, data=body, headers=headers) as response:
                    await response.read()
                    return response.status

        async def timed(index: int, keep: bool) -> None:
            path, body, headers = request(index)
            began = time.perf_counter()
            try:
                status: int | str = await post(path, body, headers)
            except (httpx.TransportError, aiohttp.ClientError) as exc:  # counted and shown, not hidden
                status = type(exc).__name__
            took = (time.perf_counter() - began) * 1000
            if keep:
                statuses.append(status)
                if isinstance(status, int):
                    latencies.append(took)

        for number in range(count + 1):  # round 0 warms up: connections, first queries
            with collector_paused():
                await asyncio.gather(*(timed(number * concurrency + i, number > 0) for i in range(concurrency)))
            await asyncio.sleep(0.5 if concurrency > 1 else 0.05)  # let this round's runs drain first
    return latencies, statuses


@dataclass(frozen=True)
class Plan:
    """(concurrency, rounds) pairs to run, and the load generator."""

    modes: list[tuple[int, int]]
    client: str


def measure(
    setup: str, slack: SlackElsewhere, slack_url: str, orchestrator_url: str, plan: Plan
) -> list[tuple[str, ...]]:
    """Rows of the table for one running setup: for each (concurrency, rounds) of `modes`,
    the commands then the peer's invocations."""
    rows: list[tuple[str, ...]] = []
    offset = 0
    slug = "".join(c for c in setup if c.isalnum())

    def command(index: int) -> Request:
        body = command_body("/ask", f"question {index}", response_url=slack.response_url(f"{slug}-{offset + index}"))
        return "/slack/commands", body, {"content-type": "application/x-www-form-urlencoded", **slack_headers(body)}

    def invoke(index: int) -> Request:
        body = json.dumps({"task_data": {"prompt": f"question {index}"}, "wait": 0}).encode()
        return f"/agents/{AGENT}/invoke", body, {"content-type": "application/json"}

    client = plan.client
    for concurrency, count in plan.modes:
        sent = (count + 1) * concurrency
        before = slack.count(f"/response/{slug}-")
        commands = asyncio.run(rounds(command, slack_url, concurrency, count, client))
        offset += sent
        invokes = asyncio.run(rounds(invoke, orchestrator_url, concurrency, count, client))
        deadline = time.monotonic() + 30
        while slack.count(f"/response/{slug}-") < before + sent and time.monotonic() < deadline:
            time.sleep(0.1)
        answered = f"{slack.count(f'/response/{slug}-') - before}/{sent}"
        rows.append(_row(setup, concurrency, "POST /slack/commands (signed)", commands, answered))
        rows.append(_row(setup, concurrency, "peer: POST /agents/{name}/invoke wait=0", invokes, ""))
    return rows


def embedded(setup: str, slack: SlackElsewhere, extra_env: dict[str, str], plan: Plan) -> list[tuple[str, ...]]:
    """`agentrunner up`: every role and the workers in one process."""
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        (workdir / "agents").mkdir()
        (workdir / "agents" / f"{AGENT}.yml").write_text(AGENT_YAML)
        running = start_platform(workdir, {**SLACK_ENV, **extra_env})
        try:
            return measure(setup, slack, running.url("slack"), running.url("orchestrator"), plan)
        finally:
            running.stop()


def distributed(slack: SlackElsewhere, database_url: str, plan: Plan) -> list[tuple[str, ...]]:
    """`serve slack`, `serve orchestrator` and `serve autonomous` as three processes on
    PostgreSQL, RabbitMQ and Redis, as in a deployment."""
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        (workdir / "agents").mkdir()
        (workdir / "agents" / f"{AGENT}.yml").write_text(AGENT_YAML)
        ports = {"slack": free_port(), "orchestrator": free_port(), "autonomous": free_port()}
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("SLACK_")}
        env.update(
            {
                **SLACK_ENV,
                "DATABASE_URL": database_url,
                "RABBITMQ_URL": RABBITMQ_URL,
                "RABBITMQ_EXCHANGE_PREFIX": f"agentrunner-bench-{run}",
                "REDIS_URL": REDIS_URL,
                "REDIS_KEY_PREFIX": f"agentrunner-bench-{run}:",
                "SLACK_PORT": str(ports["slack"]),
                "ORCHESTRATOR_PORT": str(ports["orchestrator"]),
                "AGENTS_DIR": str(workdir / "agents"),
                "DATA_DIR": str(workdir / "data"),
            }
        )
        processes = Processes(workdir)
        cli = [sys.executable, "-m", "agentrunner", "serve"]
        try:
            processes.spawn("slack", [*cli, "slack"], env)
            processes.spawn("orchestrator", [*cli, "orchestrator"], env)
            processes.spawn("autonomous", [*cli, "autonomous", "--health-port", str(ports["autonomous"])], env)
            urls = {role: f"http://127.0.0.1:{port}" for role, port in ports.items()}

            async def ready() -> None:
                async with httpx.AsyncClient() as http:
                    await wait_ready(http, processes, urls)

            asyncio.run(ready())
            return measure("distributed", slack, urls["slack"], urls["orchestrator"], plan)
        finally:
            processes.stop()
            prefix = f"agentrunner-bench-{run}"
            asyncio.run(delete_broker_names(RABBITMQ_URL, [f"{prefix}."], [f"{prefix}.events"]))
            asyncio.run(delete_redis_keys(REDIS_URL, [f"{prefix}:"]))


def _row(
    setup: str, concurrency: int, name: str, result: tuple[list[float], list[int | str]], answered: str
) -> tuple[str, ...]:
    latencies, statuses = result
    counts = ", ".join(f"{status}: {statuses.count(status)}" for status in sorted(set(statuses), key=str))
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
    parser.add_argument("--client", choices=["aiohttp", "httpx"], default="aiohttp", help="the load generator")
    parser.add_argument("--setups", default="sqlite,postgres,distributed", help="comma-separated, of the default")
    args = parser.parse_args()
    plan = Plan(modes=[(args.concurrency, args.rounds), (1, args.sequential)], client=args.client)
    setups = set(args.setups.split(","))
    rows: list[tuple[str, ...]] = []
    with SlackElsewhere() as slack:
        if "sqlite" in setups:
            rows += embedded("embedded (SQLite)", slack, {}, plan)
        if setups & {"postgres", "distributed"}:
            url, drop = postgres_database()
            try:
                if "postgres" in setups:
                    rows += embedded("embedded (PostgreSQL)", slack, {"DATABASE_URL": url}, plan)
                if "distributed" in setups:
                    rows += distributed(slack, url, plan)
            finally:
                drop()
    print(
        f"# Slack ack latency: {args.concurrency} concurrent requests x {args.rounds} rounds, "
        f"then {args.sequential} one at a time; client {args.client}"
    )
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print()
    print("| setup | in flight | endpoint | requests | statuses | p50 ms | p99 ms | max ms | answered |")
    print("|---|---:|---|---:|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
