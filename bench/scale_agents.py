"""Cost as the number of agents grows (issue 23, point 3): with 10, 100 and 1,000 agent
files loaded (a third autonomous, a third continuous, a third scheduled), the start-up
time, idle CPU and memory of each role, and the CPU per invocation, each process of its
own on a scratch PostgreSQL database, RabbitMQ (names under a prefix of this run) and Redis
(keys under a prefix of this run). Target: each figure at 1,000 agents within 1.5x of the
figure at 10.

- start-up: from spawning `agentrunner serve <role>` to its /health/ready answering 200,
  one role at a time (the orchestrator first: it registers the agents and declares their
  queues), and the CPU the process used until then (on a loaded machine the wall time
  mostly measures the load; the CPU, and the broker's, what the start-up costs);
- broker: the CPU RabbitMQ used over all the start-ups (when `--broker-pid` names its
  `beam.smp`; the broker is shared, so other work on it counts too), and the channels the
  roles opened on it (`rabbitmqctl list_channels` after the start-ups less before);
- idle: CPU (user + system, from /proc) of each process over `--idle` seconds after every
  role is up and a few seconds of settling, and its resident memory then;
- restart: every role stopped and started again, in the same order, on what the first
  start left (the queues declared, the agents' versions recorded): the CPU of each and the
  broker's, the cost of every deploy after the first and of every worker a scale-out adds
  (the first start's broker figure is the queues' creation, once in a deployment's life);
- per invocation: `--invocations` calls of one autonomous agent (provider echo, answers
  at once), 8 in flight, over HTTP with `"wait"`; CPU of the orchestrator and the
  autonomous worker summed, divided by the calls (the shared PostgreSQL, RabbitMQ and
  Redis are left out: other work on this machine uses them too).

This machine's speed drifts by up to 2x within minutes, and one run's ratio with it (two
runs of the same code gave 1.04x and 1.81x for one role's start-up CPU): `--rounds N` runs
every size N times, the order of the sizes reversed each round, and prints each figure's
median and the range of its ratio round by round.

Run: .venv/bin/python bench/scale_agents.py [--sizes 10,100,1000] [--rounds 3] [--idle 20] [--invocations 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import httpx
from bench.invoke import Processes, delete_broker_names, delete_redis_keys, free_port, wait_ready

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ROLES = ("orchestrator", "autonomous", "continuous", "scheduler")
CONCURRENCY = 8


def agent_yaml(i: int) -> str:
    """Agent `i`'s file: autonomous, continuous or scheduled (a cron that does not fire
    during the run: the idle figure is a loaded platform's, not a busy one's)."""
    mode = ("autonomous", "continuous", "scheduled")[i % 3]
    text = f"name: agent-{i}\nagent_type: bench\nexecution_mode: {mode}\nllm_config: {{provider: echo, model: echo}}\n"
    if mode == "scheduled":
        text += 'schedule_config:\n  type: cron\n  cron: "0 0 1 1 *"\n  task_data: {prompt: x}\n'
    return text


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class StartUps:
    pids: dict[str, int]
    startup_s: dict[str, float]
    startup_cpu_s: dict[str, float]
    broker_cpu_s: float
    channels: int


@dataclass
class Figures:
    first: StartUps
    idle_cpu_pct: dict[str, float]
    rss_mb: dict[str, float]
    cpu_ms_per_invocation: float
    load: str
    again: StartUps  # each role started again on the same broker and database


async def start_roles(
    processes: Processes,
    cli: list[str],
    env: dict[str, str],
    ports: dict[str, int],
    size: int,
    args: argparse.Namespace,
    suffix: str,
) -> StartUps:
    """Start every role, one at a time (the orchestrator first: it registers the agents and
    declares their queues), each until ready: wall time and CPU of each, and the broker's
    CPU and channels over them all."""
    startup: dict[str, float] = {}
    startup_cpu: dict[str, float] = {}
    pids: dict[str, int] = {}
    channels_before = await broker_channels()
    broker_before = cpu_seconds(args.broker_pid) if args.broker_pid else 0.0
    async with httpx.AsyncClient() as http:
        for role in ROLES:
            name = f"{role}-{size}{suffix}"
            extra = [] if role in ("orchestrator", "scheduler") else ["--health-port", str(ports[role])]
            started = time.perf_counter()
            pids[role] = processes.spawn(name, [*cli, "serve", role, *extra], env).pid
            await wait_ready(http, processes, {name: f"http://127.0.0.1:{ports[role]}"})
            startup[role] = time.perf_counter() - started
            startup_cpu[role] = cpu_seconds(pids[role])
    broker_cpu = cpu_seconds(args.broker_pid) - broker_before if args.broker_pid else 0.0
    channels = await broker_channels() - channels_before
    return StartUps(pids, startup, startup_cpu, broker_cpu, channels)


async def one_size(size: int, src: Path, args: argparse.Namespace, workdir: Path) -> Figures:
    run = f"{size}-{uuid.uuid4().hex[:6]}"
    database = f"agentrunner_scale_agents_{run.replace('-', '_')}"
    prefix = f"agentrunner-bench-{run}"
    base = args.postgres.rsplit("/", 1)[0]
    agents = workdir / f"agents-{run}"
    agents.mkdir()
    for i in range(size):
        (agents / f"agent-{i}.yml").write_text(agent_yaml(i))
    admin = await asyncpg.connect(args.postgres, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    ports = {role: free_port() for role in ROLES}
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env |= {
        "PYTHONPATH": f"{src}:{REPO}",
        "DATABASE_URL": f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{database}",
        "RABBITMQ_URL": args.rabbitmq,
        "RABBITMQ_EXCHANGE_PREFIX": prefix,
        "REDIS_URL": args.redis,
        "REDIS_KEY_PREFIX": f"{prefix}:",
        "ORCHESTRATOR_PORT": str(ports["orchestrator"]),
        "SCHEDULER_PORT": str(ports["scheduler"]),
        "AGENTS_DIR": str(agents),
        "DATA_DIR": str(workdir / f"data-{run}"),
        "LOG_LEVEL": "WARNING",
    }
    cli = [sys.executable, "-m", "agentrunner"]
    processes = Processes(workdir)
    try:
        migrated = await asyncio.create_subprocess_exec(*cli, "db", "upgrade", env=env, cwd=workdir)
        if await migrated.wait() != 0:
            raise RuntimeError("agentrunner db upgrade failed")
        first = await start_roles(processes, cli, env, ports, size, args, "")
        pids = first.pids
        await asyncio.sleep(5)  # settling: the first ticks, connections warming up
        before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        load = loadavg()
        await asyncio.sleep(args.idle)
        idle = {role: (cpu_seconds(pid) - before[role]) / args.idle * 100 for role, pid in pids.items()}
        memory = {role: rss_mb(pid) for role, pid in pids.items()}
        per_call = await invocations(f"http://127.0.0.1:{ports['orchestrator']}", args.invocations, pids)
        # Again on what the first start left (the queues declared, the versions recorded):
        # every deploy after the first, and every worker a scale-out adds.
        processes.stop()
        again = await start_roles(processes, cli, env, ports, size, args, "-again")
        return Figures(first, idle, memory, per_call, load, again)
    finally:
        processes.stop()
        left = await delete_broker_names(args.rabbitmq, [f"{prefix}."], [f"{prefix}.events"])
        if left:
            print(f"left on the broker: {left}", file=sys.stderr)
        await delete_redis_keys(args.redis, [f"{prefix}:"])
        admin = await asyncpg.connect(args.postgres, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()


async def broker_channels() -> int:
    """Channels open on the local broker now (`rabbitmqctl`; -1 without it), whoever opened
    them: the figure is the count after the start-ups less the count before."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_channels", "name", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await process.communicate()
    return len([line for line in out.decode().splitlines() if line.strip()]) if process.returncode == 0 else -1


async def invocations(orchestrator: str, count: int, pids: dict[str, int]) -> float:
    """CPU ms of the orchestrator and the autonomous worker per call of agent-0."""
    body = json.dumps({"task_data": {"prompt": "x"}, "wait": 30}).encode()
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(orchestrator, timeout=aiohttp.ClientTimeout(60)) as http:

        async def call() -> None:
            async with http.post("/agents/agent-0/invoke", data=body, headers=headers) as response:
                answer = await response.read()
            if response.status != 200 or json.loads(answer)["status"] != "succeeded":
                raise RuntimeError(f"invocation answered {response.status}: {answer[:300]!r}")

        await asyncio.gather(*(call() for _ in range(20)))  # warm-up
        measured = ("orchestrator", "autonomous")
        before = sum(cpu_seconds(pids[role]) for role in measured)
        remaining = count

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await call()

        await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
        return (sum(cpu_seconds(pids[role]) for role in measured) - before) / count * 1000


def rows(figures: Figures) -> dict[str, tuple[float, str]]:
    """Every figure of one size in one round, by the table's label, with its unit."""
    found: dict[str, tuple[float, str]] = {}
    for role in ROLES:
        found[f"{role} start-up"] = (figures.first.startup_s[role], "s")
    for role in ROLES:
        found[f"{role} start-up CPU"] = (figures.first.startup_cpu_s[role], "s")
    found["broker CPU over the start-ups"] = (figures.first.broker_cpu_s, "s")
    found["channels on the broker"] = (float(figures.first.channels), "")
    for role in ROLES:
        found[f"{role} idle CPU"] = (figures.idle_cpu_pct[role], "%")
    for role in ROLES:
        found[f"{role} RSS"] = (figures.rss_mb[role], "MB")
    found["CPU per invocation"] = (figures.cpu_ms_per_invocation, "ms")
    for role in ROLES:
        found[f"{role} restart CPU"] = (figures.again.startup_cpu_s[role], "s")
    found["broker CPU over the restarts"] = (figures.again.broker_cpu_s, "s")
    return found


def table(label: str, results: dict[int, list[Figures]]) -> None:
    """Each figure's median over the rounds, size by size, the ratio of the medians of the
    largest size to the smallest and, with more than one round, the range of that ratio
    round by round (both sizes of a round ran minutes apart, closer in time than the
    rounds: this host's speed drifts within minutes)."""
    print(f"\n{label}")
    sizes = sorted(results)
    rounds = min(len(results[size]) for size in sizes)
    spread = " | by round" if rounds > 1 else ""
    print(f"| figure | {' | '.join(f'{size} agents' for size in sizes)} | {sizes[-1]} / {sizes[0]}{spread} |")
    print("|---|" + "---|" * (len(sizes) + 1 + (rounds > 1)))
    by_size = {size: [rows(figures) for figures in results[size]] for size in sizes}
    for name, (_, unit) in by_size[sizes[0]][0].items():
        medians = [statistics.median(found[name][0] for found in by_size[size]) for size in sizes]
        cells = " | ".join(f"{value:.2f} {unit}" for value in medians)
        line = f"| {name} | {cells} | {_ratio(medians[-1], medians[0])}"
        if rounds > 1:
            ratios = [
                by_size[sizes[-1]][i][name][0] / by_size[sizes[0]][i][name][0]
                for i in range(rounds)
                if by_size[sizes[0]][i][name][0]
            ]
            line += f" | {min(ratios):.2f}-{max(ratios):.2f}x" if ratios else " | -"
        print(line + " |")
    print(
        "load (1, 5, 15 min) when idle was measured: "
        + "; ".join(f"{size}: {', '.join(figures.load for figures in results[size])}" for size in sizes)
    )


def _ratio(large: float, small: float) -> str:
    return f"{large / small:.2f}x" if small else "-"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measured")
    parser.add_argument("--invocations", type=int, default=300)
    parser.add_argument("--baseline", type=Path, help="src directory of other code to measure too, size by size")
    parser.add_argument("--postgres", default="postgresql://postgres:postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--broker-pid", type=int, help="pid of RabbitMQ's beam.smp, to count its CPU")
    parser.add_argument(
        "--rounds", type=int, default=1, help="every size this many times, the order of the sizes reversed each round"
    )
    args = parser.parse_args()
    codes = {"this checkout": REPO / "src"} | ({"baseline": args.baseline} if args.baseline else {})
    sizes = [int(size) for size in args.sizes.split(",")]
    results: dict[str, dict[int, list[Figures]]] = {label: {size: [] for size in sizes} for label in codes}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for size in sizes if round_ % 2 == 0 else sizes[::-1]:
                for label, src in codes.items():  # each size of both codes, one after the other: the same load
                    figures = await one_size(size, src, args, Path(tmp))
                    results[label][size].append(figures)
                    print(f"round {round_ + 1}, {label}, {size} agents: {figures}", flush=True)
    for label, by_size in results.items():
        table(label, by_size)


if __name__ == "__main__":
    asyncio.run(main())
