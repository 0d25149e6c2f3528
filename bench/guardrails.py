"""What the guardrails add to one invocation: the same trivial agent (provider `echo`) with
and without them, called alternately, one at a time, over HTTP.

- plain: `POST /agents/bench-plain/invoke` with `"wait": 30`.
- guarded: `POST /agents/bench-guarded/invoke`, same body, with an `Idempotency-Key`
  header (a new key per call: the claim and the kept answer), and the agent has
  `limits: {max_concurrency: 1000, budget_usd: 1000}` (a slot lease taken, renewed and
  given back; the budget's spend read before accepting and before running).
- and, to split its cost: the plain agent with a key; the guarded agent without one.

Setups: `agentrunner up` (embedded: SQLite, in-memory bus and cache, one process), then
distributed: `serve orchestrator` and `serve autonomous` as processes on a scratch
PostgreSQL database, RabbitMQ and Redis (deleted afterwards). Targets (issue 13): added p50
and p99 under 1 ms embedded and 3 ms distributed.

Run: .venv/bin/python bench/guardrails.py [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench.*, tests.*

from bench.invoke import (
    Processes,
    collector_paused,
    delete_broker_names,
    delete_redis_keys,
    free_port,
    percentile,
    wait_ready,
)
from bench.slack_ack import postgres_database
from tests.contract.conftest import RABBITMQ_URL, REDIS_URL
from tests.e2e.platform import start_platform

ECHO = "agent_type: bench\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
AGENTS = {
    "bench-plain": f"name: bench-plain\n{ECHO}",
    "bench-guarded": f"name: bench-guarded\n{ECHO}limits: {{max_concurrency: 1000, budget_usd: 1000}}\n",
}
BODY = json.dumps({"task_data": {"prompt": "x"}, "wait": 30}).encode()


# What each kind of call sends: (agent, with an Idempotency-Key). `keyed` and `limited` split
# the guarded call's cost between its two parts.
KINDS = {
    "plain": ("bench-plain", False),
    "keyed": ("bench-plain", True),
    "limited": ("bench-guarded", False),
    "guarded": ("bench-guarded", True),
}


@dataclass(frozen=True)
class Call:
    """One kind of call: an invocation of `agent` at `url`, with `headers`, and a new
    Idempotency-Key each time when `keyed`."""

    url: str
    agent: str
    keyed: bool = False
    headers: dict[str, str] = field(default_factory=dict)


async def alternate(kinds: dict[str, Call], calls: int, warm_up: int = 30) -> dict[str, list[float]]:
    """Latencies (ms) of `calls` calls of each kind, interleaved (the order turns each
    round, so each kind follows each other kind as often)."""
    latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
    order = list(kinds)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:

        async def one(kind: str) -> float:
            call = kinds[kind]
            headers = {"content-type": "application/json", **call.headers}
            if call.keyed:
                headers["idempotency-key"] = uuid.uuid4().hex
            began = time.perf_counter()
            async with http.post(f"{call.url}/agents/{call.agent}/invoke", data=BODY, headers=headers) as response:
                answer = await response.read()
            took = (time.perf_counter() - began) * 1000
            if response.status != 200 or json.loads(answer)["status"] != "succeeded":
                raise RuntimeError(f"{kind} invocation answered {response.status}: {answer.decode()}")
            return took

        with collector_paused():
            for index in range(warm_up + calls):
                turn = index % len(order)
                for kind in order[turn:] + order[:turn]:
                    took = await one(kind)
                    if index >= warm_up:
                        latencies[kind].append(took)
    return latencies


def guardrail_calls(url: str) -> dict[str, Call]:
    return {kind: Call(url, agent, keyed) for kind, (agent, keyed) in KINDS.items()}


def write_agents(workdir: Path) -> None:
    (workdir / "agents").mkdir()
    for name, text in AGENTS.items():
        (workdir / "agents" / f"{name}.yml").write_text(text)


def embedded(calls: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        write_agents(workdir)
        running = start_platform(workdir, {"LOG_LEVEL": "WARNING"})
        try:
            return asyncio.run(alternate(guardrail_calls(running.url("orchestrator")), calls))
        finally:
            running.stop()


def distributed(calls: int) -> dict[str, list[float]]:
    run = uuid.uuid4().hex[:8]
    database_url, drop = postgres_database()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            workdir = Path(scratch)
            write_agents(workdir)
            port, health = free_port(), free_port()
            env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
            env.update(
                {
                    "DATABASE_URL": database_url,
                    "RABBITMQ_URL": RABBITMQ_URL,
                    "RABBITMQ_EXCHANGE_PREFIX": f"agentrunner-bench-{run}",
                    "REDIS_URL": REDIS_URL,
                    "REDIS_KEY_PREFIX": f"agentrunner-bench-{run}:",
                    "ORCHESTRATOR_PORT": str(port),
                    "AGENTS_DIR": str(workdir / "agents"),
                    "DATA_DIR": str(workdir / "data"),
                    "LOG_LEVEL": "WARNING",
                }
            )
            processes = Processes(workdir)
            cli = [sys.executable, "-m", "agentrunner", "serve"]
            try:
                processes.spawn("orchestrator", [*cli, "orchestrator"], env)
                processes.spawn("autonomous", [*cli, "autonomous", "--health-port", str(health)], env)
                urls = {"orchestrator": f"http://127.0.0.1:{port}", "autonomous": f"http://127.0.0.1:{health}"}

                async def ready() -> None:
                    async with httpx.AsyncClient() as http:
                        await wait_ready(http, processes, urls)

                asyncio.run(ready())
                return asyncio.run(alternate(guardrail_calls(urls["orchestrator"]), calls))
            finally:
                processes.stop()
                prefix = f"agentrunner-bench-{run}"
                asyncio.run(delete_broker_names(RABBITMQ_URL, [f"{prefix}."], [f"{prefix}.events"]))
                asyncio.run(delete_redis_keys(REDIS_URL, [f"{prefix}:"]))
    finally:
        drop()


LABELS = {
    "plain": "plain",
    "keyed": "Idempotency-Key only",
    "limited": "limits only",
    "guarded": "guarded (both)",
}


Setups = dict[str, Callable[[int], dict[str, list[float]]]]


def measured_setups(
    title: str, default_calls: int, description: str | None, setups: Setups
) -> dict[str, dict[str, list[float]]]:
    """Parse `--calls` and `--setups`, run the chosen setups (name -> run(calls)) and print
    the table's heading: the latencies of each kind of call, per setup."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=default_calls, help="calls of each kind, per setup")
    parser.add_argument("--setups", default=",".join(setups))
    args = parser.parse_args()
    chosen = args.setups.split(",")
    results = {name: run(args.calls) for name, run in setups.items() if name in chosen}
    print(f"# {title}: {args.calls} calls of each kind per setup, interleaved, one at a time")
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print()
    print("| setup | call | p50 ms | p99 ms | added p50 ms | added p99 ms |")
    print("|---|---|---:|---:|---:|---:|")
    return results


def main() -> None:
    results = measured_setups("Guardrail overhead", 300, __doc__, {"embedded": embedded, "distributed": distributed})
    for setup, latencies in results.items():
        plain = [percentile(latencies["plain"], p) for p in (50, 99)]
        for kind, label in LABELS.items():
            measured = [percentile(latencies[kind], p) for p in (50, 99)]
            added = [m - p for m, p in zip(measured, plain, strict=True)] if kind != "plain" else []
            cells = [f"{c:.2f}" for c in measured] + (
                [f"**{a:.2f}**" if kind == "guarded" else f"{a:.2f}" for a in added] or ["", ""]
            )
            print(f"| {setup} | {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
