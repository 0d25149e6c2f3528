"""Autonomous workers as separate processes on RabbitMQ and PostgreSQL: three share the
load fairly, and when one is killed -9 with tasks in flight every accepted execution still
ends, once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from agentrunner.adapters.state.urls import run_schema_command
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.processes import role_processes
from tests.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

AGENT = "name: worker-test\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"


@dataclass
class Deployment:
    orchestrator: str
    workers: list[subprocess.Popen[bytes]]
    database_url: str
    fake: FakeOpenAI


async def _terminal_counts(database_url: str) -> tuple[Counter[str], Counter[str], list[tuple[str, int]]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            statuses: Counter[str] = Counter(
                dict((await connection.execute(text("SELECT status, count(*) FROM executions GROUP BY status"))).all())
            )
            workers: Counter[str] = Counter(
                dict((await connection.execute(text("SELECT worker, count(*) FROM executions GROUP BY worker"))).all())
            )
            finished = (
                await connection.execute(
                    text(
                        "SELECT event->'payload'->>'execution_id', count(*) FROM outbox "
                        "WHERE topic LIKE 'execution.finished.%' GROUP BY 1"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    return statuses, workers, [(str(row[0]), int(row[1])) for row in finished]


@pytest.fixture
def deployment(tmp_path: Path, postgres_url: str) -> Iterator[Deployment]:
    run_schema_command(postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "worker-test.yml").write_text(AGENT)
    port = free_port()
    with FakeOpenAI(api_key="sk-workers") as fake:
        env = {
            "ORCHESTRATOR_PORT": str(port),
            "RABBITMQ_PREFETCH_COUNT": "5",
            "OPENAI_API_KEY": fake.api_key,
            "OPENAI_BASE_URL": fake.base_url,
        }
        with role_processes(tmp_path, postgres_url, **env) as roles:
            roles.serve("orchestrator", log="o.log")
            workers = roles.serve_workers(3, ready=(f"http://127.0.0.1:{port}",))
            yield Deployment(f"http://127.0.0.1:{port}", workers, postgres_url, fake)


async def _submit(orchestrator: str, count: int) -> list[str]:
    async with httpx.AsyncClient(base_url=orchestrator, timeout=30) as http:

        async def one(index: int) -> str:
            response = await http.post(
                "/agents/worker-test/invoke", json={"task_data": {"prompt": f"task {index}"}, "wait": 0}
            )
            assert response.status_code == 202, response.text
            return str(response.json()["execution_id"])

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _until_all_terminal(database_url: str, count: int, timeout: float = 90) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while True:
        statuses, _, _ = await _terminal_counts(database_url)
        if sum(n for status, n in statuses.items() if status in ("succeeded", "failed", "timed_out")) >= count:
            return statuses
        assert time.monotonic() < deadline, f"not all terminal: {statuses}"
        await asyncio.sleep(0.2)


async def test_three_workers_share_300_tasks_fairly(deployment: Deployment) -> None:
    # Each call waits 0.5 s at the vendor, so a worker's pace is its prefetch (5 in flight)
    # over that wait, the same for all three, and not its share of a busy machine's two
    # cores: with 0.02 s the run was CPU-bound and a worker starved of CPU under load took
    # 54 of 300 (a fair dispatcher gives a slower worker less; that is not what this pins).
    deployment.fake.slow(0.5)

    await _submit(deployment.orchestrator, 300)
    statuses = await _until_all_terminal(deployment.database_url, 300)
    _, workers, finished = await _terminal_counts(deployment.database_url)

    assert statuses == Counter({"succeeded": 300})
    assert len(workers) == 3
    assert min(workers.values()) >= 60, f"unfair share: {dict(workers)}"
    assert all(count == 1 for _, count in finished)


async def test_a_worker_killed_mid_task_loses_nothing_and_records_each_result_once(deployment: Deployment) -> None:
    deployment.fake.slow(0.3)
    submitted = await _submit(deployment.orchestrator, 60)

    async def running() -> None:
        while (await _terminal_counts(deployment.database_url))[0]["running"] < 6:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(running(), 30)
    victim = deployment.workers[0]
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL

    statuses = await _until_all_terminal(deployment.database_url, len(submitted))
    _, workers, finished = await _terminal_counts(deployment.database_url)

    assert statuses == Counter({"succeeded": 60})
    assert len(finished) == 60
    assert all(count == 1 for _, count in finished), "a result was recorded twice"
    assert sum(workers.values()) == 60


async def test_sigterm_lets_a_worker_finish_its_tasks_in_flight_then_exit(deployment: Deployment) -> None:
    deployment.fake.slow(1.5)
    await _submit(deployment.orchestrator, 9)

    async def running() -> None:
        while (await _terminal_counts(deployment.database_url))[0]["running"] < 6:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(running(), 30)
    worker = deployment.workers[0]
    worker.send_signal(signal.SIGTERM)
    exit_code = await asyncio.to_thread(worker.wait, 35)
    statuses = await _until_all_terminal(deployment.database_url, 9)
    engine = create_async_engine(deployment.database_url)
    try:
        async with engine.connect() as connection:
            attempts = (await connection.execute(text("SELECT max(attempts) FROM executions"))).scalar_one()
    finally:
        await engine.dispose()

    assert exit_code == 0
    assert statuses == Counter({"succeeded": 9})
    assert attempts == 1, "a task in flight was cut short and run again instead of finishing"
