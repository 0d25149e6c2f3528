"""Invocations/s and latency of a trivial agent (provider `echo`, answers at once), run
embedded, distributed with 1 and 3 worker processes, and next to a Celery 5 peer doing
the same trivial work on the same broker, in the same run.

- embedded: a Node in this process (SQLite, in-memory bus and cache); each call is
  `node.orchestrator.invoke(agent, {"prompt": "x"}, wait=30)`, so latency is our own
  orchestration per invocation (record, route, run, record the result, wake the caller).
- distributed: `agentrunner serve orchestrator` and N x `agentrunner serve autonomous`
  as processes on a scratch PostgreSQL database, RabbitMQ and Redis; each call is an HTTP
  `POST /agents/<agent>/invoke` with `"wait": 30` from an aiohttp client in this process.
- celery: `celery worker` (prefork, `-c N`: N processes run tasks, as N agentrunner
  workers do) on RabbitMQ with a Redis result backend; each call is
  `echo.delay(task_data).get(timeout=30)` from the Celery client in this process.

Each setup runs `--sequential` calls one after another (latency), then `--total` calls
with `--concurrency` in flight (throughput). For the distributed setups the table also
gives the CPU time per invocation of the orchestrator process and of the worker processes
(utime + stime from /proc/<pid>/stat around each timed phase; Linux only). Every database, queue, exchange and Redis key
this run creates is deleted at the end, also when it fails; every process it starts is
stopped (SIGTERM, then SIGKILL of its process group).

Needs the services of scripts/services.sh, and Celery in the venv (not a dependency of
agentrunner): .venv/bin/pip install "celery[redis]>=5.3,<6"

Run: .venv/bin/python bench/invoke.py [--sequential 200] [--total 1000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import httpx
import redis.asyncio as aioredis

from agentrunner.logs import configure_logging
from agentrunner.node import Node
from agentrunner.settings import Settings

REPO = Path(__file__).resolve().parent.parent
AGENT = "bench-echo"
AGENT_YAML = (
    f"name: {AGENT}\nagent_type: bench\nexecution_mode: autonomous\nllm_config: {{provider: echo, model: echo}}\n"
)
TASK: dict[str, Any] = {"prompt": "x"}
JSON = {"content-type": "application/json"}
CALL_TIMEOUT = 30.0  # one invocation, in every setup
READY_TIMEOUT = 60.0  # a process answering /health/ready, a Celery worker its first task
PHASE_TIMEOUT = 120.0  # one mode of one setup; the whole run is far below it
STOP_GRACE = 20.0  # SIGTERM -> SIGKILL
CELERY_INSTALL = '.venv/bin/pip install "celery[redis]>=5.3,<6"'


@dataclass(frozen=True)
class Plan:
    """The same work for every setup."""

    sequential: int
    total: int
    concurrency: int
    warm_up: int


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    setup: str
    workers: int
    mode: str
    rate: float
    p50_ms: float
    p99_ms: float
    # CPU ms per invocation of the processes measured (distributed: orchestrator, workers).
    cpu_ms: dict[str, float] | None = None


@dataclass(frozen=True)
class Services:
    postgres_admin: str
    rabbitmq: str
    redis: str


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile of `samples`."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def row(
    setup: str,
    workers: int,
    mode: str,
    count: int,
    elapsed: float,
    latencies: list[float],
    cpu_seconds: dict[str, float] | None = None,
) -> Row:
    cpu_ms = {kind: seconds * 1000 / count for kind, seconds in cpu_seconds.items()} if cpu_seconds else None
    return Row(
        setup,
        workers,
        mode,
        count / elapsed,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        cpu_ms,
    )


CpuClock = Callable[[], dict[str, float]]  # CPU seconds used so far, per process kind
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used (its /proc stat; children not counted)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def spent(clock: CpuClock | None, before: dict[str, float]) -> dict[str, float] | None:
    if clock is None:
        return None
    now = clock()
    return {kind: now[kind] - before[kind] for kind in now}


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The load generator's own garbage collector kept out of the measurement: its full
    collections (this process holds the fakes' records and the test helpers) stop every
    request in flight for tens of milliseconds, a pause the servers measured never caused."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- measuring: the same two modes for every setup --------------------------------------


async def measure_async(
    setup: str, workers: int, plan: Plan, call: Callable[[], Awaitable[None]], cpu: CpuClock | None = None
) -> list[Row]:
    """Warm up, then `plan.sequential` calls in a row, then `plan.total` with
    `plan.concurrency` in flight; with `cpu`, the CPU each process kind spent per call."""
    async with asyncio.timeout(PHASE_TIMEOUT):
        await asyncio.gather(*(call() for _ in range(plan.warm_up)))
    with collector_paused():
        return await _measured(setup, workers, plan, call, cpu)


async def _measured(
    setup: str, workers: int, plan: Plan, call: Callable[[], Awaitable[None]], cpu: CpuClock | None
) -> list[Row]:
    latencies: list[float] = []

    async def timed() -> None:
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)

    before = cpu() if cpu else {}
    started = time.perf_counter()
    async with asyncio.timeout(PHASE_TIMEOUT):
        for _ in range(plan.sequential):
            await timed()
    elapsed = time.perf_counter() - started
    rows = [row(setup, workers, "sequential", plan.sequential, elapsed, latencies, spent(cpu, before))]

    latencies = []
    remaining = plan.total

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await timed()

    before = cpu() if cpu else {}
    started = time.perf_counter()
    async with asyncio.timeout(PHASE_TIMEOUT), asyncio.TaskGroup() as group:
        for _ in range(plan.concurrency):
            group.create_task(caller())
    elapsed = time.perf_counter() - started
    mode = f"concurrent x{plan.concurrency}"
    rows.append(row(setup, workers, mode, plan.total, elapsed, latencies, spent(cpu, before)))
    return rows


def measure_threads(setup: str, workers: int, plan: Plan, call: Callable[[], None]) -> list[Row]:
    """`measure_async` for a blocking client: the concurrent mode runs on threads."""
    with ThreadPoolExecutor(plan.concurrency) as pool:
        for future in [pool.submit(call) for _ in range(plan.warm_up)]:
            future.result(PHASE_TIMEOUT)
    latencies: list[float] = []

    def timed() -> None:
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)  # list.append is atomic under the GIL

    started = time.perf_counter()
    for _ in range(plan.sequential):
        timed()
    rows = [row(setup, workers, "sequential", plan.sequential, time.perf_counter() - started, latencies)]

    latencies = []
    remaining = plan.total
    lock = threading.Lock()

    def caller() -> None:
        nonlocal remaining
        while True:
            with lock:
                if remaining <= 0:
                    return
                remaining -= 1
            timed()

    started = time.perf_counter()
    with ThreadPoolExecutor(plan.concurrency) as pool:
        for future in [pool.submit(caller) for _ in range(plan.concurrency)]:
            future.result(PHASE_TIMEOUT)
    rows.append(
        row(setup, workers, f"concurrent x{plan.concurrency}", plan.total, time.perf_counter() - started, latencies)
    )
    return rows


# -- embedded -------------------------------------------------------------------------


async def bench_embedded(plan: Plan, workdir: Path) -> list[Row]:
    settings = Settings(
        _env_file=None,
        agents_dir=workdir / "agents",
        data_dir=workdir / "embedded",
        database_url="",
        rabbitmq_url="",
        redis_url="",
        log_level="WARNING",
    )
    node = Node(settings)
    async with node.running():

        async def call() -> None:
            execution = await node.orchestrator.invoke(AGENT, TASK, wait=CALL_TIMEOUT)
            if execution.status.value != "succeeded":
                raise RuntimeError(f"embedded invocation ended {execution.status.value}: {execution.error}")

        return await measure_async("agentrunner embedded", 1, plan, call)


# -- distributed ----------------------------------------------------------------------


class Processes:
    """Subprocesses of this run, each in its own process group, stopped together."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append((name, process))
        return process

    def tail(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self, names: set[str] | None = None) -> None:
        """SIGTERM (graceful drain), then SIGKILL of the whole group after STOP_GRACE."""
        chosen = [(n, p) for n, p in self.started if names is None or n in names]
        for _, process in chosen:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for _, process in chosen:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # children left behind (prefork pool), if any
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        self.started = [(n, p) for n, p in self.started if (n, p) not in chosen]


async def wait_ready(http: httpx.AsyncClient, processes: Processes, targets: dict[str, str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    pending = dict(targets)
    alive = dict(processes.started)
    while pending:
        for name, url in list(pending.items()):
            if alive[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {alive[name].returncode}:\n{processes.tail(name)}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}/health/ready", timeout=1)).status_code == 200:
                    del pending[name]
        if time.monotonic() > deadline:
            name = next(iter(pending))
            raise RuntimeError(f"{name} not ready within {READY_TIMEOUT:g} s:\n{processes.tail(name)}")
        await asyncio.sleep(0.1)


async def bench_distributed(plan: Plan, services: Services, workdir: Path, run: str, processes: Processes) -> list[Row]:
    database = f"agentrunner_bench_{run}"
    base = services.postgres_admin.rsplit("/", 1)[0]
    admin = await asyncpg.connect(services.postgres_admin, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    try:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        port = free_port()
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
            }
        )
        cli = [sys.executable, "-m", "agentrunner"]
        migrated = await asyncio.to_thread(
            subprocess.run, [*cli, "db", "upgrade"], env=env, cwd=workdir, capture_output=True, timeout=120
        )
        if migrated.returncode != 0:
            raise RuntimeError(f"agentrunner db upgrade failed:\n{migrated.stdout.decode()}{migrated.stderr.decode()}")

        limits = httpx.Limits(max_connections=plan.concurrency * 2, max_keepalive_connections=plan.concurrency * 2)
        orchestrator = f"http://127.0.0.1:{port}"
        async with contextlib.AsyncExitStack() as stack:
            http = await stack.enter_async_context(
                httpx.AsyncClient(base_url=orchestrator, limits=limits, timeout=CALL_TIMEOUT + 5)
            )

            async def add_workers(count: int) -> None:
                targets = {}
                for _ in range(count):
                    name, health = f"worker-{len(processes.started)}", free_port()
                    processes.spawn(name, [*cli, "serve", "autonomous", "--health-port", str(health)], env)
                    targets[name] = f"http://127.0.0.1:{health}"
                await wait_ready(http, processes, targets)

            # The load: aiohttp, whose C parser keeps the client's own CPU (on the same 2
            # cores as the platform) small; httpx cost more CPU than the orchestrator.
            connector = aiohttp.TCPConnector(limit=plan.concurrency * 2)
            load = await stack.enter_async_context(
                aiohttp.ClientSession(
                    orchestrator, connector=connector, timeout=aiohttp.ClientTimeout(CALL_TIMEOUT + 5)
                )
            )
            body = json.dumps({"task_data": TASK, "wait": CALL_TIMEOUT}).encode()

            async def call() -> None:
                async with load.post(f"/agents/{AGENT}/invoke", data=body, headers=JSON) as response:
                    answer = await response.read()
                if response.status != 200 or json.loads(answer)["status"] != "succeeded":
                    raise RuntimeError(f"distributed invocation answered {response.status}: {answer.decode()}")

            orchestrator_pid = processes.spawn("orchestrator", [*cli, "serve", "orchestrator"], env).pid

            def cpu() -> dict[str, float]:
                workers = [p.pid for name, p in processes.started if name.startswith("worker-")]
                return {
                    "orchestrator": process_cpu_seconds(orchestrator_pid),
                    "workers": sum(process_cpu_seconds(pid) for pid in workers),
                }

            await wait_ready(http, processes, {"orchestrator": orchestrator})
            await add_workers(1)
            rows = await measure_async("agentrunner distributed", 1, plan, call, cpu)
            await add_workers(2)
            rows += await measure_async("agentrunner distributed", 3, plan, call, cpu)
        return rows
    finally:
        await asyncio.to_thread(processes.stop)
        admin = await asyncpg.connect(services.postgres_admin, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()


# -- celery ---------------------------------------------------------------------------


def bench_celery(plan: Plan, services: Services, run: str, processes: Processes) -> list[Row]:
    queue = f"agentrunner-bench-celery-{run}"
    env = dict(os.environ)
    env.update(
        {
            "BENCH_CELERY_BROKER": services.rabbitmq,
            "BENCH_CELERY_BACKEND": services.redis,
            "BENCH_CELERY_QUEUE": queue,
            "BENCH_CELERY_KEY_PREFIX": f"{queue}:",
        }
    )
    os.environ.update({k: v for k, v in env.items() if k.startswith("BENCH_CELERY_")})  # the client, below
    from bench.celery_peer import app, echo  # noqa: PLC0415 - configured by the variables above

    def call() -> None:
        if echo.delay(TASK).get(timeout=CALL_TIMEOUT) != TASK:
            raise RuntimeError("the Celery task answered something else than its input")

    rows: list[Row] = []
    try:
        for workers in (1, 3):
            name = f"celery-c{workers}"
            processes.spawn(
                name,
                [
                    *(sys.executable, "-m", "celery", "-A", "bench.celery_peer", "worker"),
                    *("-Q", queue, "-c", str(workers), "-P", "prefork", "-n", f"{queue}-{workers}@%h"),
                    *("--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"),
                ],
                env,
            )
            try:
                echo.delay(TASK).get(timeout=READY_TIMEOUT)  # queued until the worker consumes
            except Exception as exc:
                raise RuntimeError(f"Celery worker not answering: {exc}\n{processes.tail(name)}") from exc
            rows += measure_threads("celery", workers, plan, call)
            processes.stop({name})
    finally:
        processes.stop()
        app.close()
    return rows


# -- cleaning up ----------------------------------------------------------------------


async def delete_broker_names(url: str, prefixes: list[str], exchanges: list[str]) -> list[str]:
    """Delete every queue whose name starts with one of `prefixes`, and `exchanges`;
    returns what could not be deleted."""
    listed = await asyncio.to_thread(
        subprocess.run, ["rabbitmqctl", "list_queues", "-q", "name"], capture_output=True, text=True, timeout=60
    )
    queues = [q.strip() for q in listed.stdout.splitlines() if q.strip().startswith(tuple(prefixes))]
    left: list[str] = []
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel()
        for kind, name in [("queue", q) for q in queues] + [("exchange", e) for e in exchanges]:
            try:
                if channel.is_closed:
                    channel = await connection.channel()
                if kind == "queue":
                    await channel.queue_delete(name, timeout=10)
                else:
                    await channel.exchange_delete(name, timeout=10)
            except Exception as exc:
                left.append(f"{kind} {name} ({exc})")
    finally:
        await connection.close()
    return left


async def delete_redis_keys(url: str, prefixes: list[str]) -> int:
    client = aioredis.from_url(url, socket_timeout=10)
    deleted = 0
    try:
        for prefix in prefixes:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            for start in range(0, len(keys), 500):
                deleted += await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()
    return deleted


@contextlib.contextmanager
def cleaned_up(services: Services, run: str, processes: Processes) -> Iterator[list[str]]:
    """Yields a list that receives the names this run failed to delete."""
    left: list[str] = []
    try:
        yield left
    finally:
        processes.stop()
        celery_queue = f"agentrunner-bench-celery-{run}"
        prefixes = [f"agentrunner-bench-{run}.", celery_queue]
        exchanges = [f"agentrunner-bench-{run}.events", celery_queue]
        left += asyncio.run(delete_broker_names(services.rabbitmq, prefixes, exchanges))
        asyncio.run(delete_redis_keys(services.redis, [f"agentrunner-bench-{run}:", f"{celery_queue}:"]))


# -- the run --------------------------------------------------------------------------


def table(rows: list[Row], plan: Plan, took: float, left: list[str]) -> None:
    try:
        import celery  # noqa: PLC0415

        peer_version = f"celery {celery.__version__}"
    except ImportError:
        peer_version = "no celery"
    print(
        f"invoking a trivial agent (provider echo): {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{peer_version}; everything (client, processes, PostgreSQL, RabbitMQ, Redis) on this host"
    )
    print(
        f"{plan.sequential} sequential + {plan.total} concurrent calls ({plan.concurrency} in flight) per setup and "
        f"worker count, after {plan.warm_up} warm-up calls; run took {took:.1f} s"
    )
    print("  agentrunner embedded:    Node in this process (SQLite, in-memory bus/cache), orchestrator.invoke(wait=30)")
    print(
        "  agentrunner distributed: HTTP POST /agents/{name}/invoke (wait=30) -> orchestrator process -> "
        "PostgreSQL + RabbitMQ + Redis -> N `serve autonomous` processes (prefetch 10 each)"
    )
    print(
        "  celery:                  client in this process, delay().get(timeout=30) -> RabbitMQ -> one `celery worker "
        "-P prefork -c N` (N processes run tasks) -> Redis result backend"
    )
    if left:
        print(f"NOT deleted on the broker: {', '.join(left)}")
    print()
    print(f"load average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print()
    print(
        f"{'setup':25} {'workers':>7} {'mode':15} {'invocations/s':>14} {'p50 ms':>9} {'p99 ms':>9}"
        f" {'orch CPU ms/inv':>16} {'workers CPU ms/inv':>19}"
    )
    for r in rows:
        cpu = r.cpu_ms or {}
        orchestrator_ms = f"{cpu['orchestrator']:.2f}" if "orchestrator" in cpu else "-"
        workers_ms = f"{cpu['workers']:.2f}" if "workers" in cpu else "-"
        print(
            f"{r.setup:25} {r.workers:7d} {r.mode:15} {r.rate:14.0f} {r.p50_ms:9.2f} {r.p99_ms:9.2f}"
            f" {orchestrator_ms:>16} {workers_ms:>19}"
        )
    ours = next(
        (r for r in rows if r.setup == "agentrunner distributed" and r.workers == 3 and r.mode != "sequential"), None
    )
    peer = next((r for r in rows if r.setup == "celery" and r.workers == 3 and r.mode != "sequential"), None)
    if ours is None or peer is None:
        return
    print()
    print(
        f"distributed 3 workers / celery 3 workers, concurrent throughput: {ours.rate / peer.rate:.2f} "
        f"({ours.rate:.0f} / {peer.rate:.0f} invocations/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequential", type=int, default=200, help="calls one after another, per setup")
    parser.add_argument("--total", type=int, default=1000, help="calls in the concurrent mode, per setup")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight in the concurrent mode")
    parser.add_argument("--warm-up", type=int, default=30, help="calls before measuring, per setup")
    parser.add_argument("--postgres", default="postgresql://postgres:postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--setups", default="embedded,distributed,celery", help="which setups to run, comma-separated (default: all)"
    )
    args = parser.parse_args()
    setups = set(args.setups.split(","))
    try:
        if "celery" in setups:
            import celery  # noqa: F401, PLC0415
    except ImportError:
        sys.exit(f"bench/invoke.py compares with Celery, which is not installed here: run\n  {CELERY_INSTALL}")
    configure_logging("bench", "WARNING")
    plan = Plan(sequential=args.sequential, total=args.total, concurrency=args.concurrency, warm_up=args.warm_up)
    services = Services(postgres_admin=args.postgres, rabbitmq=args.rabbitmq, redis=args.redis)
    sys.path.insert(0, str(REPO))  # `bench.celery_peer`, for the Celery client

    run = uuid.uuid4().hex[:12]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="agentrunner-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "agents").mkdir()
        (workdir / "agents" / f"{AGENT}.yml").write_text(AGENT_YAML)
        (workdir / "logs").mkdir()
        processes = Processes(workdir / "logs")
        with cleaned_up(services, run, processes) as left:
            rows = asyncio.run(bench_embedded(plan, workdir)) if "embedded" in setups else []
            if "distributed" in setups:
                rows += asyncio.run(bench_distributed(plan, services, workdir, run, processes))
            if "celery" in setups:
                rows += bench_celery(plan, services, run, processes)
    table(rows, plan, time.perf_counter() - started, left)


if __name__ == "__main__":
    main()
