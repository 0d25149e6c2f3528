"""`agentrunner cluster up` as a user runs it: every role its own process on PostgreSQL,
Redis and RabbitMQ; the seed's quick start works against it; a role killed with `kill -9`
is restarted while the others keep serving; Ctrl-C (SIGTERM) stops all, leaving no process
behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import aio_pika
import asyncpg
import httpx
import pytest

from agentrunner.liveness import probe_tls
from tests.conftest import POSTGRES_ADMIN_URL
from tests.contract.conftest import RABBITMQ_URL
from tests.e2e.platform import ROLES
from tests.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.redis]

AGENT = (
    "name: echo-assistant\nagent_type: demo\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
)


async def _delete_queues(prefix: str) -> None:
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "name"], capture_output=True, text=True, timeout=60, check=False
    )
    names = [line.strip() for line in listed.stdout.splitlines() if line.strip().startswith(prefix)]
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
        await channel.exchange_delete(f"{prefix}.events")
    finally:
        await connection.close()


async def _database(action: str, name: str) -> None:
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(
            f'CREATE DATABASE "{name}"' if action == "create" else f'DROP DATABASE "{name}" WITH (FORCE)'
        )
    finally:
        await admin.close()


@dataclass
class Cluster:
    """A running `agentrunner cluster up`: its process, ports, environment and state file."""

    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    env: dict[str, str]
    workdir: Path

    def log(self) -> str:
        return (self.workdir / "cluster.log").read_text()[-6000:]

    def roles(self) -> dict[str, dict[str, Any]]:
        """The supervisor's state file, by role (read directly: cheap to poll)."""
        state = json.loads((self.workdir / "data" / "cluster.json").read_text())
        return {role["role"]: role for role in state["roles"]}

    def wait_role(self, role: str, *, restarts: int, timeout: float = 90) -> dict[str, Any]:
        """The state of `role` once it is ready after `restarts` restarts."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.roles()[role]
            if current["state"] == "ready" and current["restarts"] == restarts:
                return current
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, (current, self.log())
            time.sleep(0.05)

    def status(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`agentrunner cluster status ARGS` run as an operator would, beside the cluster."""
        return subprocess.run(
            [sys.executable, "-m", "agentrunner", "cluster", "status", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def alive(pid: int) -> bool:
    """True when `pid` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


def wait_gone(pids: list[int], timeout: float = 30) -> list[int]:
    """The `pids` still running after `timeout` seconds (none, when they all ended)."""
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the module (starting ten processes is the slow part): the tests
    that kill roles leave it serving, the last one stops it."""
    tmp_path = tmp_path_factory.mktemp("cluster")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "echo-assistant.yml").write_text(AGENT)
    prefix = f"test-{uuid4().hex[:12]}"
    database = f"agentrunner_t_{uuid4().hex[:12]}"
    asyncio.run(_database("create", database))
    server = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    ports = {role: free_port() for role in ROLES}
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({f"{role.upper()}_PORT": str(port) for role, port in ports.items()})
    env.update(
        {
            "AGENTS_DIR": str(tmp_path / "agents"),
            "DATA_DIR": str(tmp_path / "data"),
            "DATABASE_URL": f"{server.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{database}",
            "RABBITMQ_URL": RABBITMQ_URL,
            "RABBITMQ_EXCHANGE_PREFIX": prefix,
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "REDIS_KEY_PREFIX": f"{prefix}:",
        }
    )
    log = (tmp_path / "cluster.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "agentrunner", "cluster", "up", "--autonomous", "2"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    running = Cluster(process, ports, env, tmp_path)
    try:
        deadline = time.monotonic() + 90
        while b"processes ready" not in (tmp_path / "cluster.log").read_bytes():
            assert process.poll() is None, running.log()
            assert time.monotonic() < deadline, running.log()
            time.sleep(0.2)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        log.close()
        asyncio.run(_delete_queues(prefix))
        asyncio.run(_database("drop", database))


def test_the_seed_quick_start_against_the_cluster(cluster: Cluster) -> None:
    ports = cluster.ports
    health = {role: httpx.get(f"http://127.0.0.1:{port}/health/live").json()["status"] for role, port in ports.items()}
    orchestrator = f"http://127.0.0.1:{ports['orchestrator']}"
    agents = httpx.get(f"{orchestrator}/agents").json()
    answer = httpx.post(
        f"{orchestrator}/agents/echo-assistant/invoke",
        json={"task_data": {"prompt": "What is the capital of France?"}},
        timeout=30,
    )
    accepted = [
        httpx.post(f"{orchestrator}/agents/echo-assistant/invoke", json={"task_data": {"prompt": f"n{i}"}, "wait": 0})
        for i in range(20)
    ]
    ids = [response.json()["execution_id"] for response in accepted]
    deadline = time.monotonic() + 30
    statuses: list[str] = []
    while time.monotonic() < deadline:
        statuses = [httpx.get(f"{orchestrator}/executions/{i}", verify=probe_tls()).json()["status"] for i in ids]
        if all(status == "succeeded" for status in statuses):
            break
        time.sleep(0.2)
    audit = httpx.get(f"http://127.0.0.1:{ports['state']}/executions/{ids[0]}").json()

    assert health == dict.fromkeys(ports, "ok")
    assert [a["name"] for a in agents] == ["echo-assistant"]
    assert answer.status_code == 200
    assert answer.json()["output"] == "What is the capital of France?"
    assert {r.status_code for r in accepted} == {202}
    assert statuses == ["succeeded"] * 20
    assert audit["output"] == "n0"


def _invoke(orchestrator: str, prompt: str) -> httpx.Response:
    return httpx.post(
        f"{orchestrator}/agents/echo-assistant/invoke", json={"task_data": {"prompt": prompt}}, timeout=60
    )


def test_a_killed_worker_is_restarted_while_the_orchestrator_keeps_answering(cluster: Cluster) -> None:
    orchestrator = f"http://127.0.0.1:{cluster.ports['orchestrator']}"
    before = cluster.roles()["autonomous-1"]
    answers: list[int | str] = []
    polling = threading.Event()

    def poll_readiness() -> None:
        with httpx.Client(timeout=5) as client:
            while not polling.is_set():
                try:
                    answers.append(client.get(f"{orchestrator}/health/ready").status_code)
                except httpx.HTTPError as exc:
                    answers.append(repr(exc))
                time.sleep(0.05)

    poller = threading.Thread(target=poll_readiness)
    poller.start()
    try:
        os.kill(before["pid"], signal.SIGKILL)
        answer = _invoke(orchestrator, "after the kill")
        after = cluster.wait_role("autonomous-1", restarts=1)
        status = cluster.status("--json")
    finally:
        polling.set()
        poller.join(10)

    assert answer.status_code == 200, answer.text
    assert answer.json()["output"] == "after the kill"
    assert after["pid"] != before["pid"]
    assert not alive(before["pid"])
    assert after["last_exit"] == "signal SIGKILL"
    assert len(answers) >= 3
    assert answers == [200] * len(answers)
    assert status.returncode == 0, status.stderr
    reported = {role["role"]: role for role in json.loads(status.stdout)["roles"]}
    assert reported["autonomous-1"]["restarts"] == 1
    assert reported["autonomous-1"]["pid"] == after["pid"]
    assert reported["orchestrator"]["restarts"] == 0
    assert "restart 1 in 0.5 s" in cluster.log()


def test_a_killed_orchestrator_comes_back_on_its_port(cluster: Cluster) -> None:
    orchestrator = f"http://127.0.0.1:{cluster.ports['orchestrator']}"
    before = cluster.roles()["orchestrator"]

    os.kill(before["pid"], signal.SIGKILL)
    after = cluster.wait_role("orchestrator", restarts=1)
    answer = _invoke(orchestrator, "after the restart")
    table = cluster.status()

    assert after["pid"] != before["pid"]
    assert after["last_exit"] == "signal SIGKILL"
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"] == "after the restart"
    assert table.returncode == 0, table.stderr
    assert "orchestrator" in table.stdout
    assert "signal SIGKILL" in table.stdout


def test_sigterm_stops_every_role_leaving_no_process_behind(cluster: Cluster) -> None:
    pids = [role["pid"] for role in cluster.roles().values()]

    cluster.process.send_signal(signal.SIGTERM)
    code = cluster.process.wait(60)
    left = wait_gone(pids)
    status = cluster.status()

    assert code == 0, cluster.log()
    assert len(pids) == 9
    assert left == []
    assert {role["state"] for role in cluster.roles().values()} == {"stopped"}
    assert status.returncode == 1
    assert "no cluster running" in status.stderr
