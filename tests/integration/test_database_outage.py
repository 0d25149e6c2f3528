"""A node whose PostgreSQL stops and restarts: while it is down every route and readiness
answer 503 dependency_unavailable with Retry-After (never 500); a restart of about a second
is absorbed (every request answered, none lost or recorded twice); no background future's
error goes unretrieved.

The PostgreSQL here is the test's own (initdb + pg_ctl in a temporary folder, on a free
port): the shared server is never stopped."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest

from agentrunner.adapters.state.engine import RECONNECT_WINDOW_SECONDS
from agentrunner.adapters.state.urls import run_schema_command
from agentrunner.node import Node
from agentrunner.settings import Settings
from tests.conftest import FIXTURE_AGENTS
from tests.integration.conftest import unretrieved
from tests.ports import free_port

_BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not _BINARIES, reason="needs PostgreSQL's server binaries (initdb, pg_ctl)"),
]


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of the test's own, which the test may stop and start."""

    folder: Path
    port: int
    restart_seconds: float = 0.0

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    async def pg_ctl(self, *args: str) -> None:
        command = [f"{_BINARIES[-1]}/pg_ctl", "-D", str(self.folder / "data"), "-w", "-t", "30", *args]
        await _run(command)

    async def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        await self.pg_ctl("-o", options, "-l", str(self.folder / "log"), "start")

    async def stop(self) -> None:
        await self.pg_ctl("-m", "fast", "stop")

    async def restart(self) -> None:
        began = time.monotonic()
        await self.stop()
        await self.start()
        self.restart_seconds = time.monotonic() - began


async def _run(command: list[str]) -> None:
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        command = ["runuser", "-u", "postgres", "--", *command]
    process = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, f"{' '.join(command)}: {output.decode()}"


@pytest.fixture
async def postgres() -> AsyncIterator[PrivatePostgres]:
    folder = Path(tempfile.mkdtemp(prefix="agentrunner-pg-"))  # not under pytest's 0700 tmp
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = PrivatePostgres(folder, free_port())
    await _run([f"{_BINARIES[-1]}/initdb", "-D", str(folder / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    await server.start()
    try:
        await asyncio.to_thread(run_schema_command, server.url, "upgrade")
        yield server
    finally:
        await _run([f"{_BINARIES[-1]}/pg_ctl", "-D", str(folder / "data"), "-m", "immediate", "stop"])
        shutil.rmtree(folder, ignore_errors=True)


def _settings(tmp_path: Path, url: str) -> Settings:
    (tmp_path / "agents").mkdir(exist_ok=True)
    shutil.copy(FIXTURE_AGENTS / "echo-helper.yml", tmp_path / "agents" / "echo-helper.yml")
    return Settings(_env_file=None, database_url=url, agents_dir=tmp_path / "agents", data_dir=tmp_path)


def _is_outage(answer: httpx.Response) -> bool:
    body = answer.json()
    code = body["error"]["code"] if "error" in body else body.get("status")  # readiness: not_ready
    return (
        answer.status_code == 503
        and code in {"dependency_unavailable", "not_ready"}
        and int(answer.headers["retry-after"]) >= 1
    )


async def test_while_the_database_is_down_routes_and_readiness_answer_503_with_retry_after(
    tmp_path: Path, postgres: PrivatePostgres, loop_errors: list[dict[str, Any]]
) -> None:
    node = Node(_settings(tmp_path, postgres.url))
    async with node.running():
        transport = httpx.ASGITransport(app=node.apps()["orchestrator"])
        async with httpx.AsyncClient(transport=transport, base_url="http://node", timeout=30) as client:
            done = await client.post("/agents/echo-helper/invoke", json={"task_data": {"prompt": "before"}, "wait": 10})
            assert done.status_code == 200, done.text
            execution_id = done.json()["execution_id"]

            await postgres.stop()
            answers = {
                "invoke": await client.post("/agents/echo-helper/invoke", json={"task_data": {"prompt": "x"}}),
                # One the cache does not hold (the finished one is answered from it).
                "get execution": await client.get(f"/executions/{uuid4().hex}"),
                "list executions": await client.get("/executions"),
                "readiness": await client.get("/health/ready"),
            }
            assert {name: _is_outage(answer) for name, answer in answers.items()} == dict.fromkeys(answers, True), {
                name: (answer.status_code, answer.text) for name, answer in answers.items()
            }

            await postgres.start()
            deadline = time.monotonic() + 30
            while (await client.get("/health/ready")).status_code != 200:
                assert time.monotonic() < deadline, "not ready 30 s after the database came back"
                await asyncio.sleep(0.1)
            again = await client.get(f"/executions/{execution_id}")
            assert again.status_code == 200
            assert again.json()["status"] == "succeeded"
    assert unretrieved(loop_errors) == []


async def test_a_restart_of_a_second_is_absorbed_and_nothing_is_lost_or_doubled(
    tmp_path: Path, postgres: PrivatePostgres, loop_errors: list[dict[str, Any]]
) -> None:
    node = Node(_settings(tmp_path, postgres.url))
    answers: list[httpx.Response] = []
    async with node.running():
        transport = httpx.ASGITransport(app=node.apps()["orchestrator"])
        async with httpx.AsyncClient(transport=transport, base_url="http://node", timeout=60) as client:

            async def invoke(index: int) -> None:
                body = {"task_data": {"prompt": f"p{index}"}, "wait": 0}
                answers.append(await client.post("/agents/echo-helper/invoke", json=body))

            async def traffic(first: int, count: int) -> None:
                for index in range(first, first + count):
                    await invoke(index)
                    await asyncio.sleep(0)

            before = asyncio.create_task(traffic(0, 5))
            await before
            restart = asyncio.create_task(postgres.restart())
            # Requests sent while the server stops and starts (a restart takes about a second).
            during = [asyncio.create_task(traffic(100 * lane, 10)) for lane in range(1, 4)]
            await restart
            await asyncio.gather(*during)
            await traffic(900, 5)

            refused = [(answer.status_code, answer.text) for answer in answers if answer.status_code != 202]
            if postgres.restart_seconds < RECONNECT_WINDOW_SECONDS - 0.5:
                assert refused == []  # the internal retry covered the whole restart
            else:  # a loaded machine took longer to restart: refused, but as an outage
                assert all(status == 503 and "dependency_unavailable" in text for status, text in refused)
            ids = [answer.json()["execution_id"] for answer in answers if answer.status_code == 202]
            deadline = time.monotonic() + 60
            pending = set(ids)
            while pending:
                assert time.monotonic() < deadline, f"{len(pending)} executions not finished in 60 s"
                for execution_id in list(pending):
                    got = await client.get(f"/executions/{execution_id}")
                    if got.status_code == 200 and got.json()["status"] == "succeeded":
                        pending.discard(execution_id)
                await asyncio.sleep(0.1)

    connection = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres")
    try:
        stored = await connection.fetch("SELECT input->>'prompt' AS prompt, count(*) AS n FROM executions GROUP BY 1")
    finally:
        await connection.close()
    accepted = {
        json.loads(answer.request.content)["task_data"]["prompt"] for answer in answers if answer.status_code == 202
    }
    expected = {prompt: 1 for prompt in accepted}
    assert len(expected) >= 10  # before and after the restart at least
    assert {row["prompt"]: row["n"] for row in stored} == expected
    assert unretrieved(loop_errors) == []
