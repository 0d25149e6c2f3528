"""`agentrunner cluster up` as a user runs it: every role its own process on PostgreSQL,
Redis and RabbitMQ; the seed's quick start works against it; Ctrl-C (SIGTERM) stops all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import aio_pika
import httpx
import pytest

from tests.conftest import free_port
from tests.contract.conftest import RABBITMQ_URL
from tests.e2e.platform import ROLES

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


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str) -> Iterator[dict[str, int]]:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "echo-assistant.yml").write_text(AGENT)
    prefix = f"test-{uuid4().hex[:12]}"
    ports = {role: free_port() for role in ROLES}
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({f"{role.upper()}_PORT": str(port) for role, port in ports.items()})
    env.update(
        {
            "AGENTS_DIR": str(tmp_path / "agents"),
            "DATA_DIR": str(tmp_path / "data"),
            "DATABASE_URL": postgres_url,
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
    try:
        deadline = time.monotonic() + 90
        while b"processes ready" not in (tmp_path / "cluster.log").read_bytes():
            assert process.poll() is None, (tmp_path / "cluster.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "cluster.log").read_text()
            time.sleep(0.2)
        yield ports
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, (tmp_path / "cluster.log").read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
        asyncio.run(_delete_queues(prefix))


def test_the_seed_quick_start_against_the_cluster(cluster: dict[str, int]) -> None:
    health = {
        role: httpx.get(f"http://127.0.0.1:{port}/health/live").json()["status"] for role, port in cluster.items()
    }
    orchestrator = f"http://127.0.0.1:{cluster['orchestrator']}"
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
        statuses = [httpx.get(f"{orchestrator}/executions/{i}").json()["status"] for i in ids]
        if all(status == "succeeded" for status in statuses):
            break
        time.sleep(0.2)
    audit = httpx.get(f"http://127.0.0.1:{cluster['state']}/executions/{ids[0]}").json()

    assert health == dict.fromkeys(cluster, "ok")
    assert [a["name"] for a in agents] == ["echo-assistant"]
    assert answer.status_code == 200
    assert answer.json()["output"] == "What is the capital of France?"
    assert {r.status_code for r in accepted} == {202}
    assert statuses == ["succeeded"] * 20
    assert audit["output"] == "n0"
