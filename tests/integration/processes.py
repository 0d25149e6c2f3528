"""Roles as real processes for the integration suites: `agentrunner serve ...` on
PostgreSQL and RabbitMQ with a broker prefix of their own, health waits, and a SIGTERM
(then SIGKILL) stop that also deletes the broker objects."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

from agentrunner.supervisor import is_ready
from tests.conftest import FIXTURE_AGENTS
from tests.contract.conftest import RABBITMQ_URL
from tests.e2e.test_cluster import _delete_queues
from tests.ports import free_port


@dataclass
class RoleProcesses:
    """Processes of one deployment: their environment, logs, and health URLs."""

    env: dict[str, str]
    logs: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def serve(self, *args: str, log: str, **env: str) -> subprocess.Popen[bytes]:
        """Start `agentrunner serve ARGS` with `env` on top of the deployment's."""
        with (self.logs / log).open("wb") as output:  # the child keeps its own handle
            process = subprocess.Popen(
                [sys.executable, "-m", "agentrunner", "serve", *args],
                env={**self.env, **env},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.started.append(process)
        return process

    def serve_workers(self, count: int, *, ready: tuple[str, ...] = ()) -> list[subprocess.Popen[bytes]]:
        """Start `count` autonomous workers (logs w0.log, w1.log, ...) and wait until they
        and the `ready` URLs answer /health/ready."""
        workers, health = [], list(ready)
        for index in range(count):
            port = free_port()
            workers.append(self.serve("autonomous", "--health-port", str(port), log=f"w{index}.log"))
            health.append(f"http://127.0.0.1:{port}")
        self.wait_ready(*health)
        return workers

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.logs.iterdir()))

    def wait_ready(self, *urls: str, timeout: float = 60.0) -> None:
        """Until every `url`'s `/health/ready` answers 200 (the logs say why not)."""
        deadline = time.monotonic() + timeout
        for url in urls:
            while True:
                if is_ready(url):
                    break
                assert time.monotonic() < deadline, self.log_text()
                time.sleep(0.1)


@contextmanager
def role_processes(tmp_path: Path, database_url: str, **env: str) -> Iterator[RoleProcesses]:
    """A deployment's processes (started with `serve`), stopped afterwards: SIGTERM, 40 s,
    then SIGKILL; its queues and exchange on the broker deleted."""
    prefix = f"test-{uuid4().hex[:12]}"
    base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    base.update(
        {
            "AGENTS_DIR": str(tmp_path / "agents"),
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": RABBITMQ_URL,
            "RABBITMQ_EXCHANGE_PREFIX": prefix,
            "LOG_LEVEL": "WARNING",
            **env,
        }
    )
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    processes = RoleProcesses(base, logs)
    try:
        yield processes
    finally:
        for process in processes.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.started:
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        asyncio.run(_delete_queues(prefix))


def wait_finished(http: httpx.Client, ids: list[str], timeout: float = 60) -> list[dict[str, Any]]:
    """The records of executions `ids` (GET /executions/{id}) once none is queued or running."""
    deadline = time.monotonic() + timeout
    while True:
        records = [http.get(f"/executions/{execution_id}").json() for execution_id in ids]
        if all(record["status"] not in ("queued", "running") for record in records):
            return records
        assert time.monotonic() < deadline, [record["status"] for record in records]
        time.sleep(0.1)


def echo_worker_env(tmp_path: Path, database_url: str, rabbitmq_url: str, **more: str) -> dict[str, str]:
    """The environment of a `serve autonomous` process on `database_url` and `rabbitmq_url`,
    serving the fixtures' echo-helper agent (copied to `tmp_path`/agents), with `more`
    variables; nothing of the caller's keys, URLs or Redis."""
    (tmp_path / "agents").mkdir(exist_ok=True)
    shutil.copy(FIXTURE_AGENTS / "echo-helper.yml", tmp_path / "agents" / "echo-helper.yml")
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_URL")) and not k.startswith("REDIS_")}
    env |= {
        "AGENTS_DIR": str(tmp_path / "agents"),
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": database_url,
        "RABBITMQ_URL": rabbitmq_url,
        "LOG_LEVEL": "WARNING",
    }
    return env | more


def spawn_worker(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`agentrunner serve autonomous` in `env` (see `echo_worker_env`), its output to
    `log_path`: the process and the port of its health probes."""
    port = free_port()
    with log_path.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "agentrunner", "serve", "autonomous", "--health-port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return worker, port
