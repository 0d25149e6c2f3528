"""Agent versions (issue 24): a node records a version for each new content of an agent
file it loads, and the API lists them, shows each with its text and its diff to the
previous one; the same content reloaded is no new version."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from agentrunner.domain.agent_version import AgentVersion, LoadedContent
from agentrunner.domain.event import Event, new_id
from agentrunner.domain.execution import Execution
from agentrunner.domain.llm import LLMRequest
from agentrunner.node import Node
from agentrunner.runtime.pinned_configs import pinned_to
from agentrunner.runtime.topics import invoke_topic
from agentrunner.settings import Settings
from tests.integration.test_hot_reload import agent_yaml, eventually
from tests.ports import free_port


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


async def test_a_changed_schema_file_alone_is_a_new_version_of_the_agent_naming_it(node: Node) -> None:
    agents = node.settings.agents_dir
    (agents / "schemas").mkdir()
    (agents / "schemas" / "answer.json").write_text('{"type": "object", "required": ["title"]}')
    (agents / "typed.yml").write_text(agent_yaml("typed") + "output_schema: schemas/answer.json\n")
    await node.reload_agents()
    (agents / "schemas" / "answer.json").write_text('{"type": "object", "required": ["title", "year"]}')
    await node.reload_agents()
    async with client(node) as http:
        listed = (await http.get("/agents/typed/versions")).json()
        second = (await http.get("/agents/typed/versions/2")).json()

    assert [v["version"] for v in listed] == [2, 1]
    assert listed[0]["content_hash"] != listed[1]["content_hash"]
    assert second["changes"] == [{"field": "output_schema.required", "before": ["title"], "after": ["title", "year"]}]


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


async def test_work_created_while_a_new_content_is_numbered_names_a_version(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store takes its time to number the edit (held here until the invocation is made):
    # meanwhile the node goes on with the content it has a number for.
    numbering, go_on = asyncio.Event(), asyncio.Event()
    record = node.store.agent_versions.record_versions

    async def slow_record(contents: Sequence[LoadedContent]) -> list[AgentVersion]:
        numbering.set()
        await go_on.wait()
        return await record(contents)

    monkeypatch.setattr(node.store.agent_versions, "record_versions", slow_record)
    async with client(node) as http:
        (node.settings.agents_dir / "writer.yml").write_text(agent_yaml("writer", prompt="Be thorough."))
        reload = asyncio.create_task(node.reload_agents())
        await asyncio.wait_for(numbering.wait(), 10)
        during = (await http.post("/agents/writer/invoke", json={"task_data": {"prompt": "one"}})).json()
        go_on.set()
        await asyncio.wait_for(reload, 10)
        after = (await http.post("/agents/writer/invoke", json={"task_data": {"prompt": "two"}})).json()

    assert (during["agent_version"], after["agent_version"]) == (1, 2)


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


def _system_prompt(request: LLMRequest) -> str:
    """The scripted model answers with the system prompt it was given: the version it ran."""
    return " ".join(str(m.content) for m in request.messages if m.role == "system")


async def test_an_execution_created_on_v1_runs_on_v1_after_the_file_changed_to_v2(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    scripted = "name: writer\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: scripted, model: s}\n"
    (agents / "writer.yml").write_text(scripted + "system_prompt: Be brief.\n")
    node = Node(Settings(_env_file=None, agents_dir=agents, data_dir=tmp_path), script=_system_prompt)
    async with node.running(), client(node) as http:
        # Accepted on v1 (not yet run, as a message waiting in its queue), then the edit lands.
        queued = Execution(
            execution_id=new_id(), agent="writer", input={"prompt": "hi"}, trace_id=new_id(), agent_version=1
        )
        await node.store.executions.create_execution(queued)
        (agents / "writer.yml").write_text(scripted + "system_prompt: Be thorough.\n")
        await node.reload_agents()
        await node.bus.publish(
            Event(
                topic=invoke_topic("writer"),
                payload={"execution_id": queued.execution_id, **pinned_to(queued)},
                trace_id=queued.trace_id,
            )
        )
        pinned = await _finished(http, queued.execution_id)
        fresh = (await http.post("/agents/writer/invoke", json={"task_data": {"prompt": "hi"}})).json()

    assert (pinned["agent_version"], pinned["output"]) == (1, "Be brief.")
    assert (fresh["agent_version"], fresh["output"]) == (2, "Be thorough.")


async def _finished(http: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            record: dict[str, Any] = (await http.get(f"/executions/{execution_id}")).json()
            if record["status"] not in ("queued", "running"):
                return record
            await asyncio.sleep(0.05)
