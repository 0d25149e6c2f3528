"""Hot reload: adding, editing or removing an agent file applies within seconds, without a
restart; a broken edit keeps the last good version running and reports the error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Literal

import httpx
import pytest

from agentrunner.domain.execution import ExecutionStatus
from agentrunner.node import Node
from agentrunner.settings import Settings

RELOAD_SECONDS = 5.0


def agent_yaml(name: str, *, subscriptions: tuple[str, ...] = (), prompt: str = "") -> str:
    return (
        f"name: {name}\nagent_type: t\nexecution_mode: autonomous\n"
        f"llm_config: {{provider: echo, model: echo}}\nsystem_prompt: '{prompt}'\n"
        f"event_subscriptions: {list(subscriptions)!r}\n"
    )


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "first.yml").write_text(agent_yaml("first", subscriptions=("old.topic",)))
    running = Node(Settings(_env_file=None, agents_dir=tmp_path / "agents", data_dir=tmp_path))
    async with running.running():
        await asyncio.sleep(0.2)  # the watcher is armed
        yield running


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    async def poll() -> None:
        while not await check():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), RELOAD_SECONDS)
    except TimeoutError:
        raise AssertionError(f"not within {RELOAD_SECONDS} s: {what}") from None


def client(node: Node, role: Literal["orchestrator", "config"] = "orchestrator") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=node.apps()[role]), base_url="http://n")


async def test_a_new_file_adds_an_agent_that_answers(node: Node) -> None:
    (node.settings.agents_dir / "second.yml").write_text(agent_yaml("second"))

    async with client(node) as http:

        async def listed() -> bool:
            return (await http.get("/agents/second")).status_code == 200

        await eventually(listed, "the new agent is listed")
        answer = await http.post("/agents/second/invoke", json={"task_data": {"prompt": "hello"}})

    assert answer.json()["status"] == "succeeded"


async def test_a_broken_edit_keeps_the_last_good_version_running(node: Node) -> None:
    (node.settings.agents_dir / "first.yml").write_text("name: first\nexecution_mode: [not, valid\n")

    async with client(node) as http:

        async def warned() -> bool:
            return bool((await http.get("/agents/first")).json()["warnings"])

        await eventually(warned, "the broken edit is reported")
        detail = (await http.get("/agents/first")).json()
        answer = await http.post("/agents/first/invoke", json={"task_data": {"prompt": "still here"}})

    assert detail["status"] == "available"
    assert "YAML syntax error" in detail["warnings"][-1]
    assert (answer.json()["status"], answer.json()["output"]) == ("succeeded", "still here")


async def test_a_removed_file_removes_the_agent(node: Node) -> None:
    (node.settings.agents_dir / "first.yml").unlink()

    async with client(node) as http:

        async def gone() -> bool:
            return (await http.get("/agents/first")).status_code == 404

        await eventually(gone, "the agent is gone")


async def test_changed_subscriptions_are_re_bound(node: Node) -> None:
    (node.settings.agents_dir / "first.yml").write_text(agent_yaml("first", subscriptions=("new.topic",)))

    async with client(node) as http:

        async def rebound() -> bool:
            subscriptions: list[str] = (await http.get("/agents/first")).json()["event_subscriptions"]
            return subscriptions == ["new.topic"]

        await eventually(rebound, "the new subscription is in place")
        await asyncio.sleep(0.2)
        await http.post("/events", json={"topic": "old.topic", "payload": {"prompt": "old"}})
        await http.post("/events", json={"topic": "new.topic", "payload": {"prompt": "new"}})

        async def ran() -> bool:
            page = await node.store.queries.list_executions(agent="first")
            return any(e.status is ExecutionStatus.SUCCEEDED for e in page.items)

        await eventually(ran, "the agent ran for the new topic")
        await asyncio.sleep(0.3)  # room for a run for the old topic, which must not happen
        outputs = [e.output for e in (await node.store.queries.list_executions(agent="first")).items]

    assert outputs == ["new"]


async def test_post_configs_reload_applies_files_without_a_watcher(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    settings = Settings(_env_file=None, agents_dir=tmp_path / "agents", data_dir=tmp_path, watch_agents=False)
    node = Node(settings)
    async with node.running():
        (tmp_path / "agents" / "late.yml").write_text(agent_yaml("late"))
        await asyncio.sleep(0.5)
        async with client(node) as orchestrator, client(node, "config") as config:
            before = (await orchestrator.get("/agents/late")).status_code
            reloaded = await config.post("/configs/reload")
            after = (await orchestrator.get("/agents/late")).status_code

    assert (before, after) == (404, 200)
    assert [c["name"] for c in reloaded.json()] == ["late"]
