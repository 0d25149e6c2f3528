"""Hot reload across processes: the config role sees an agent file change and says so on
the bus (`config.changed`); the orchestrator and the worker, separate processes on
RabbitMQ and PostgreSQL, apply it within seconds, without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from tests.integration.processes import role_processes
from tests.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

# A deadline, not a speed: the watcher debounces changes (1.6 s) and a loaded 2-core machine
# runs three roles and the suite beside them; the times taken are reported when one is late.
RELOAD_SECONDS = 20.0


def _agent(name: str, prompt: str = "") -> str:
    return (
        f"name: {name}\nagent_type: t\nexecution_mode: autonomous\n"
        f"llm_config: {{provider: echo, model: echo}}\nsystem_prompt: '{prompt}'\n"
    )


@pytest.fixture
def roles(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Path, str]]:
    run_schema_command(postgres_url, "upgrade")
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "first.yml").write_text(_agent("first"))
    ports = {"config": free_port(), "orchestrator": free_port(), "worker": free_port()}
    env = {"CONFIG_PORT": str(ports["config"]), "ORCHESTRATOR_PORT": str(ports["orchestrator"]), "LOG_LEVEL": "INFO"}
    with role_processes(tmp_path, postgres_url, **env) as processes:
        processes.serve("config", log="config.log")
        processes.serve("orchestrator", log="orchestrator.log")
        processes.serve("autonomous", "--health-port", str(ports["worker"]), log="worker.log")
        processes.wait_ready(*(f"http://127.0.0.1:{port}" for port in ports.values()))
        time.sleep(0.5)  # the config role's file watcher is armed
        yield agents, f"http://127.0.0.1:{ports['orchestrator']}"


async def _within(seconds: float, check: Callable[[], Awaitable[bool]]) -> float:
    """How long `check` took to hold (it must within `seconds`)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, f"not applied within {seconds} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_files_added_broken_and_removed_apply_on_other_processes(roles: tuple[Path, str]) -> None:
    agents, orchestrator = roles
    async with httpx.AsyncClient(base_url=orchestrator, timeout=60) as http:  # invokes wait up to 30 s

        async def status(name: str) -> int:
            return (await http.get(f"/agents/{name}")).status_code

        async def invoke(name: str, prompt: str) -> httpx.Response:
            return await http.post(f"/agents/{name}/invoke", json={"task_data": {"prompt": prompt}, "wait": 30})

        (agents / "second.yml").write_text(_agent("second"))

        async def second_listed() -> bool:
            return await status("second") == 200

        added_after = await _within(RELOAD_SECONDS, second_listed)
        ran = await invoke("second", "new agent, no restart")  # the worker process consumes it too

        (agents / "second.yml").write_text("name: second\nexecution_mode: [not, valid\n")

        async def reported() -> bool:
            return bool((await http.get("/agents/second")).json()["warnings"])

        broken_after = await _within(RELOAD_SECONDS, reported)
        still = await invoke("second", "the last good version runs")

        (agents / "first.yml").unlink()

        async def first_gone() -> bool:
            return await status("first") == 404

        removed_after = await _within(RELOAD_SECONDS, first_gone)
        refused = await invoke("first", "gone")

    assert (ran.status_code, ran.json()["status"], ran.json()["output"]) == (200, "succeeded", "new agent, no restart")
    assert (still.json()["status"], still.json()["output"]) == ("succeeded", "the last good version runs")
    assert (refused.status_code, refused.json()["error"]["code"]) == (404, "agent_not_found")
    assert max(added_after, broken_after, removed_after) < RELOAD_SECONDS
