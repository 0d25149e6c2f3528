"""Three `agentrunner serve scheduler` processes on RabbitMQ and PostgreSQL share 200
one-second schedules: every tick is fired exactly once, and after one replica is killed -9
the others keep firing every tick."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from agentrunner.adapters.state.urls import run_schema_command
from tests.conftest import free_port
from tests.contract.conftest import RABBITMQ_URL
from tests.e2e.test_cluster import _delete_queues

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

AGENT = "name: pinger\nagent_type: t\nexecution_mode: scheduled\nllm_config: {provider: echo, model: echo}\n"
AGENT += "schedule_config: {type: cron, cron: '0 0 1 1 *'}\n"
SCHEDULES = 200


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:  # the child keeps its own handle
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[tuple[list[subprocess.Popen[bytes]], list[str], str]]:
    run_schema_command(postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "pinger.yml").write_text(AGENT)
    prefix = f"test-{uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(
        {
            "AGENTS_DIR": str(tmp_path / "agents"),
            "DATABASE_URL": postgres_url,
            "RABBITMQ_URL": RABBITMQ_URL,
            "RABBITMQ_EXCHANGE_PREFIX": prefix,
            "SCHEDULER_REFRESH_SECONDS": "0.5",
            "LOG_LEVEL": "WARNING",
        }
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    processes, urls = [], []
    for index in range(3):
        port = free_port()
        command = [sys.executable, "-m", "agentrunner", "serve", "scheduler"]
        processes.append(_spawn(command, {**env, "SCHEDULER_PORT": str(port)}, logs / f"s{index}.log"))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        for url in urls:
            while True:
                try:
                    if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "\n".join(p.read_text() for p in logs.iterdir())
                time.sleep(0.1)
        yield processes, urls, postgres_url
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        asyncio.run(_delete_queues(prefix))


async def _fires(database_url: str) -> tuple[dict[str, list[datetime]], int]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    text(
                        "SELECT schedule_id, scheduled_for, status FROM schedule_fires WHERE schedule_id LIKE 'load-%'"
                    )
                )
            ).all()
            executions = (
                await connection.execute(text("SELECT count(*) FROM executions WHERE schedule_id LIKE 'load-%'"))
            ).scalar_one()
    finally:
        await engine.dispose()
    fires: dict[str, list[datetime]] = defaultdict(list)
    for schedule_id, scheduled_for, status in rows:
        assert status == "fired"
        fires[schedule_id].append(scheduled_for)
    return fires, int(executions)


def _missing(fires: dict[str, list[datetime]], start: datetime, end: datetime) -> dict[str, list[str]]:
    expected = [start + timedelta(seconds=n) for n in range(int((end - start).total_seconds()) + 1)]
    missing = {}
    for index in range(SCHEDULES):
        schedule_id = f"load-{index}"
        seen = set(fires.get(schedule_id, []))
        lost = [tick.isoformat() for tick in expected if tick not in seen]
        if lost:
            missing[schedule_id] = lost
    return missing


async def test_three_replicas_fire_every_tick_once_and_survive_a_kill(
    replicas: tuple[list[subprocess.Popen[bytes]], list[str], str],
) -> None:
    processes, urls, database_url = replicas
    async with httpx.AsyncClient(base_url=urls[0], timeout=30) as http:
        created = await asyncio.gather(
            *(
                http.post(
                    "/schedules",
                    json={"id": f"load-{i}", "agent": "pinger", "interval_seconds": 1, "overlap_policy": "allow"},
                )
                for i in range(SCHEDULES)
            )
        )
    assert all(response.status_code == 201 for response in created), created[0].text
    # Every replica has loaded them within its refresh period (0.5 s).
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    await asyncio.sleep(9)

    processes[0].send_signal(signal.SIGKILL)
    killed_at = datetime.now(UTC)
    await asyncio.sleep(9)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)

    fires, executions = await _fires(database_url)

    assert end - killed_at > timedelta(seconds=5)
    assert _missing(fires, start, end) == {}, "every tick fired, before and after the kill"
    total = sum(len(times) for times in fires.values())
    assert all(len(times) == len(set(times)) for times in fires.values()), "no tick fired twice"
    assert executions == total, "one execution per fire"
    async with httpx.AsyncClient(base_url=urls[1], timeout=30) as http:
        listed = (await http.get("/schedules/load-7/fires", params={"limit": 5})).json()["items"]
    assert len(listed) == 5
    assert all(item["execution_id"] and item["outcome"] == "queued" for item in listed)
