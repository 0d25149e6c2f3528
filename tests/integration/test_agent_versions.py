"""Agent versions (issue 24): a node records a version for each new content of an agent
file it loads, and the API lists them, shows each with its text and its diff to the
previous one; the same content reloaded is no new version."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from agentrunner.node import Node
from agentrunner.settings import Settings
from tests.conftest import free_port
from tests.integration.test_hot_reload import agent_yaml, eventually


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "writer.yml").write_text(agent_yaml("writer", prompt="Be brief."))
    running = Node(Settings(_env_file=None, agents_dir=tmp_path / "agents", data_dir=tmp_path))
    async with running.running():
        await asyncio.sleep(0.2)  # the watcher is armed
        yield running


def client(node: Node) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=node.apps()["orchestrator"]), base_url="http://n")


async def test_an_edited_file_is_a_new_version_with_its_diff(node: Node) -> None:
    async with client(node) as http:
        first = (await http.get("/agents/writer/versions")).json()
        (node.settings.agents_dir / "writer.yml").write_text(agent_yaml("writer", prompt="Be thorough."))

        async def two_versions() -> bool:
            return len((await http.get("/agents/writer/versions")).json()) == 2

        await eventually(two_versions, "the edit is recorded as version 2")
        await node.reload_agents()  # the same content again: no new version
        listed = (await http.get("/agents/writer/versions")).json()
        second = (await http.get("/agents/writer/versions/2")).json()
        original = (await http.get("/agents/writer/versions/1")).json()

    assert [(v["version"], v["changes"]) for v in first] == [(1, [])]
    assert [v["version"] for v in listed] == [2, 1]
    assert second["changes"] == [{"field": "system_prompt", "before": "Be brief.", "after": "Be thorough."}]
    assert "system_prompt: Be thorough." in second["text"]
    assert "-system_prompt: Be brief.\n+system_prompt: Be thorough.\n" in second["diff"]
    assert (original["diff"], original["content_hash"]) == ("", first[0]["content_hash"])


async def test_each_execution_records_the_version_it_ran_and_is_found_by_it(node: Node) -> None:
    async with client(node) as http:
        before = (await http.post("/agents/writer/invoke", json={"task_data": {"prompt": "one"}})).json()
        (node.settings.agents_dir / "writer.yml").write_text(agent_yaml("writer", prompt="Be thorough."))
        await node.reload_agents()
        after = (await http.post("/agents/writer/invoke", json={"task_data": {"prompt": "two"}})).json()
        on_first = (await http.get("/executions", params={"agent": "writer", "agent_version": 1})).json()
        on_second = (await http.get("/executions", params={"agent": "writer", "agent_version": 2})).json()
        without_agent = await http.get("/executions", params={"agent_version": 1})

    assert (before["agent_version"], after["agent_version"]) == (1, 2)
    assert [e["execution_id"] for e in on_first["items"]] == [before["execution_id"]]
    assert [e["execution_id"] for e in on_second["items"]] == [after["execution_id"]]
    assert without_agent.status_code == 400


async def _cli(*args: str) -> str:
    """What `agentrunner ARGS` prints (it must succeed)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentrunner",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_the_cli_lists_versions_and_shows_one_with_its_diff(node: Node) -> None:
    (node.settings.agents_dir / "writer.yml").write_text(agent_yaml("writer", prompt="Be thorough."))
    await node.reload_agents()
    port = free_port()
    config = uvicorn.Config(
        node.apps()["orchestrator"], host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not serving.done(), "uvicorn stopped"
                await asyncio.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        listed = await _cli("agents", "versions", "writer", "--url", url)
        shown = await _cli("agents", "versions", "writer", "2", "--url", url)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)

    assert "2 versions of writer" in listed
    assert "system_prompt" in listed
    assert "+system_prompt: Be thorough." in shown
    assert "-system_prompt: Be brief." in shown
