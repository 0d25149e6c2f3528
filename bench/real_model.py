"""agentrunner's overhead next to a real model's own time: SmolLM2-135M on llama.cpp
(tests/real_model) answering a short completion (greedy, 16 tokens at most), asked
directly over HTTP (the model's own time, plus the network) and through agentrunner, in
the same run, one call of each after the other so that both see the same load.

- embedded: a Node in this process (SQLite, in-memory bus); each call is
  `node.orchestrator.invoke(agent, ..., wait=60)`.
- distributed: `agentrunner serve orchestrator` and one `agentrunner serve autonomous` as
  processes on a scratch PostgreSQL database, RabbitMQ and Redis; each call is an HTTP
  `POST /agents/<agent>/invoke` with `"wait": 60`.

Overhead = median over pairs of (through agentrunner - direct), and that as a percentage of
the direct call's median. Needs the model's wheels (`make install`) and, for distributed,
the services of scripts/services.sh. Every process, database, queue and key it makes goes
at the end.

Run: .venv/bin/python bench/real_model.py [--calls 20] [--setups embedded,distributed]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.invoke import Processes, Services, cleaned_up, free_port, wait_ready
from tests.real_model.server import INSTALL_HINT, ModelServer, missing_wheels, model_server

from agentrunner.logs import configure_logging
from agentrunner.node import Node
from agentrunner.settings import Settings

AGENT = "bench-smollm2"
MAX_TOKENS = 16
PROMPT = "What is the capital of France?"
AGENT_YAML = (
    f"name: {AGENT}\nagent_type: bench\nexecution_mode: autonomous\n"
    f"llm_config: {{provider: openai, model: smollm2, temperature: 0, max_tokens: {MAX_TOKENS}, max_attempts: 1}}\n"
    "retry_config: {max_retries: 0}\n"
)
# What the openai provider sends for this agent (no system prompt, no tools).
DIRECT_BODY = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": PROMPT}],
    "temperature": 0,
    "max_tokens": MAX_TOKENS,
}
CALL_TIMEOUT = 60.0


async def paired(
    calls: int, direct: Callable[[], Awaitable[None]], through: Callable[[], Awaitable[None]]
) -> tuple[list[float], list[float]]:
    """(direct ms, through-agentrunner ms) of `calls` pairs, after two of warm-up."""
    direct_ms: list[float] = []
    through_ms: list[float] = []
    for index in range(calls + 2):
        started = time.perf_counter()
        await direct()
        middle = time.perf_counter()
        await through()
        ended = time.perf_counter()
        if index >= 2:
            direct_ms.append((middle - started) * 1000)
            through_ms.append((ended - middle) * 1000)
    return direct_ms, through_ms


def direct_call(http: httpx.AsyncClient, model: ModelServer) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        response = await http.post(f"{model.url}/v1/chat/completions", json=DIRECT_BODY)
        response.raise_for_status()

    return call


async def bench_embedded(model: ModelServer, workdir: Path, calls: int) -> tuple[list[float], list[float]]:
    settings = Settings(
        _env_file=None,
        agents_dir=workdir / "agents",
        data_dir=workdir / "embedded",
        rabbitmq_url="",
        redis_url="",
        openai_api_key="sk-local",
        openai_base_url=f"{model.url}/v1",
    )
    node = Node(settings)
    async with node.running(), httpx.AsyncClient(timeout=CALL_TIMEOUT) as http:

        async def through() -> None:
            execution = await node.orchestrator.invoke(AGENT, {"prompt": PROMPT}, wait=CALL_TIMEOUT)
            if execution.status.value != "succeeded":
                raise RuntimeError(f"embedded invocation ended {execution.status.value}: {execution.error}")

        return await paired(calls, direct_call(http, model), through)


async def bench_distributed(
    model: ModelServer, services: Services, workdir: Path, run: str, processes: Processes, calls: int
) -> tuple[list[float], list[float]]:
    database = f"agentrunner_bench_{run}"
    base = services.postgres_admin.rsplit("/", 1)[0]
    admin = await asyncpg.connect(services.postgres_admin, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    try:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
        env.update(
            {
                "DATABASE_URL": f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{database}",
                "RABBITMQ_URL": services.rabbitmq,
                "RABBITMQ_EXCHANGE_PREFIX": f"agentrunner-bench-{run}",
                "REDIS_URL": services.redis,
                "REDIS_KEY_PREFIX": f"agentrunner-bench-{run}:",
                "ORCHESTRATOR_PORT": str(port),
                "AGENTS_DIR": str(workdir / "agents"),
                "DATA_DIR": str(workdir / "distributed"),
                "LOG_LEVEL": "WARNING",
                "OPENAI_API_KEY": "sk-local",
                "OPENAI_BASE_URL": f"{model.url}/v1",
            }
        )
        cli = [sys.executable, "-m", "agentrunner"]
        migrated = await asyncio.to_thread(
            subprocess.run, [*cli, "db", "upgrade"], env=env, cwd=workdir, capture_output=True, timeout=120
        )
        if migrated.returncode != 0:
            raise RuntimeError(f"agentrunner db upgrade failed:\n{migrated.stdout.decode()}{migrated.stderr.decode()}")
        orchestrator = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=orchestrator, timeout=CALL_TIMEOUT + 5) as http:
            processes.spawn("orchestrator", [*cli, "serve", "orchestrator"], env)
            health = free_port()
            processes.spawn("worker", [*cli, "serve", "autonomous", "--health-port", str(health)], env)
            await wait_ready(http, processes, {"orchestrator": orchestrator, "worker": f"http://127.0.0.1:{health}"})
            body = {"task_data": {"prompt": PROMPT}, "wait": CALL_TIMEOUT}

            async def through() -> None:
                response = await http.post(f"/agents/{AGENT}/invoke", json=body)
                if response.status_code != 200 or response.json()["status"] != "succeeded":
                    raise RuntimeError(f"distributed invocation answered {response.status_code}: {response.text}")

            return await paired(calls, direct_call(http, model), through)
    finally:
        await asyncio.to_thread(processes.stop)
        admin = await asyncpg.connect(services.postgres_admin, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()


def row(setup: str, direct_ms: list[float], through_ms: list[float]) -> dict[str, float | str]:
    overhead = statistics.median(t - d for d, t in zip(direct_ms, through_ms, strict=True))
    model_ms = statistics.median(direct_ms)
    return {
        "setup": setup,
        "model_ms": round(model_ms, 1),
        "through_ms": round(statistics.median(through_ms), 1),
        "overhead_ms": round(overhead, 1),
        "overhead_pct": round(100 * overhead / model_ms, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20, help="pairs of calls per setup")
    parser.add_argument("--setups", default="embedded,distributed")
    parser.add_argument("--postgres", default="postgresql://postgres:postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    if missing_wheels():
        sys.exit(f"bench/real_model.py needs {missing_wheels()}: {INSTALL_HINT}")
    configure_logging("bench", "WARNING")
    setups = args.setups.split(",")
    services = Services(postgres_admin=args.postgres, rabbitmq=args.rabbitmq, redis=args.redis)
    run = uuid.uuid4().hex[:12]
    rows = []
    with tempfile.TemporaryDirectory(prefix="agentrunner-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "agents").mkdir()
        (workdir / "agents" / f"{AGENT}.yml").write_text(AGENT_YAML)
        with model_server(workdir) as model:
            if "embedded" in setups:
                rows.append(row("embedded", *asyncio.run(bench_embedded(model, workdir, args.calls))))
            if "distributed" in setups:
                processes = Processes(workdir)
                with cleaned_up(services, run, processes) as left:
                    measured = asyncio.run(bench_distributed(model, services, workdir, run, processes, args.calls))
                    rows.append(row("distributed", *measured))
                if left:
                    print(f"left behind: {left}", file=sys.stderr)
    with contextlib.suppress(OSError), open("/proc/loadavg") as load:
        print(f"load average: {load.read().strip()}")
    print(f"{'setup':<12} {'model ms':>9} {'through ms':>11} {'overhead ms':>12} {'overhead %':>11}")
    for entry in rows:
        print(
            f"{entry['setup']:<12} {entry['model_ms']:>9} {entry['through_ms']:>11} "
            f"{entry['overhead_ms']:>12} {entry['overhead_pct']:>11}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
