"""Hot reload across processes: the config role sees an agent file change and says so on
the bus (`config.changed`); the orchestrator and the worker, separate processes on
RabbitMQ and PostgreSQL, apply it within seconds, without a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from tests.conftest import free_port
from tests.contract.conftest import RABBITMQ_URL
from tests.e2e.test_cluster import _delete_queues

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

RELOAD_SECONDS = 5.0


def _agent(name: str, prompt: str = "") -> str:
    return (
        f"name: {name}\nagent_type: t\nexecution_mode: autonomous\n"
        f"llm_config: {{provider: echo, model: echo}}\nsystem_prompt: '{prompt}'\n"
    )


@dataclass
class Roles:
    agents: Path
    orchestrator: str
    logs: Path

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.logs.iterdir()))


@pytest.fixture
def roles(tmp_path: Path, postgres_url: str) -> Iterator[Roles]:
    run_schema_command(postgres_url, "upgrade")
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "first.yml").write_text(_agent("first"))
    prefix = f"test-{uuid4().hex[:12]}"
    ports = {"config": free_port(), "orchestrator": free_port(), "worker": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(
        {
            "CONFIG_PORT": str(ports["config"]),
            "ORCHESTRATOR_PORT": str(ports["orchestrator"]),
            "AGENTS_DIR": str(agents),
            "DATABASE_URL": postgres_url,
            "RABBITMQ_URL": RABBITMQ_URL,
            "RABBITMQ_EXCHANGE_PREFIX": prefix,
            "LOG_LEVEL": "INFO",
        }
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    serve = [sys.executable, "-m", "agentrunner", "serve"]
    commands = {
        "config": [*serve, "config"],
        "orchestrator": [*serve, "orchestrator"],
        "worker": [*serve, "autonomous", "--health-port", str(ports["worker"])],
    }
    processes = []
    for name, command in commands.items():
        with (logs / f"{name}.log").open("wb") as output:
            processes.append(subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT))
    deployed = Roles(agents, f"http://127.0.0.1:{ports['orchestrator']}", logs)
    try:
        deadline = time.monotonic() + 60
        for port in ports.values():
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, deployed.log_text()
                time.sleep(0.1)
        time.sleep(0.5)  # the config role's file watcher is armed
        yield deployed
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        asyncio.run(_delete_queues(prefix))


async def _within(seconds: float, check: Callable[[], Awaitable[bool]]) -> float:
    """How long `check` took to hold (it must within `seconds`)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, f"not applied within {seconds} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_files_added_broken_and_removed_apply_on_other_processes(roles: Roles) -> None:
    async with httpx.AsyncClient(base_url=roles.orchestrator, timeout=15) as http:

        async def status(name: str) -> int:
            return (await http.get(f"/agents/{name}")).status_code

        async def invoke(name: str, prompt: str) -> httpx.Response:
            return await http.post(f"/agents/{name}/invoke", json={"task_data": {"prompt": prompt}, "wait": 10})

        (roles.agents / "second.yml").write_text(_agent("second"))

        async def second_listed() -> bool:
            return await status("second") == 200

        added_after = await _within(RELOAD_SECONDS, second_listed)
        ran = await invoke("second", "new agent, no restart")  # the worker process consumes it too

        (roles.agents / "second.yml").write_text("name: second\nexecution_mode: [not, valid\n")

        async def reported() -> bool:
            return bool((await http.get("/agents/second")).json()["warnings"])

        broken_after = await _within(RELOAD_SECONDS, reported)
        still = await invoke("second", "the last good version runs")

        (roles.agents / "first.yml").unlink()

        async def first_gone() -> bool:
            return await status("first") == 404

        removed_after = await _within(RELOAD_SECONDS, first_gone)
        refused = await invoke("first", "gone")

    assert (ran.status_code, ran.json()["status"], ran.json()["output"]) == (200, "succeeded", "new agent, no restart")
    assert (still.json()["status"], still.json()["output"]) == ("succeeded", "the last good version runs")
    assert (refused.status_code, refused.json()["error"]["code"]) == (404, "agent_not_found")
    assert max(added_after, broken_after, removed_after) < RELOAD_SECONDS
