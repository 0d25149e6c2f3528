"""Three `agentrunner serve scheduler` processes on RabbitMQ and PostgreSQL share 200
one-second schedules: every tick is fired exactly once, and after one replica is killed -9
the others keep firing every tick."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from agentrunner.adapters.state.urls import run_schema_command
from tests.integration.processes import role_processes
from tests.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

AGENT = "name: pinger\nagent_type: t\nexecution_mode: scheduled\nllm_config: {provider: echo, model: echo}\n"
AGENT += "schedule_config: {type: cron, cron: '0 0 1 1 *'}\n"
SCHEDULES = 200


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[tuple[list[subprocess.Popen[bytes]], list[str], str]]:
    run_schema_command(postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "pinger.yml").write_text(AGENT)
    with role_processes(tmp_path, postgres_url, SCHEDULER_REFRESH_SECONDS="0.5") as roles:
        processes, urls = [], []
        for index in range(3):
            port = free_port()
            processes.append(roles.serve("scheduler", log=f"s{index}.log", SCHEDULER_PORT=str(port)))
            urls.append(f"http://127.0.0.1:{port}")
        roles.wait_ready(*urls)
        yield processes, urls, postgres_url


async def _fires(database_url: str) -> tuple[dict[str, list[datetime]], int]:
    # One snapshot for both counts: the replicas keep firing between two statements.
    engine = create_async_engine(database_url, isolation_level="REPEATABLE READ")
    try:
        async with engine.begin() as connection:
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
