"""A2A both ways, as users run it (issue 26, item 2): `agentrunner up` with API keys, its
agents' models answered by the OpenAI loopback fake.

- The a2a-sdk's own client reads an agent's card, sends a message (the answer comes back
  as the task's artifact), streams one (events until the task completed), gets a task and
  cancels a slow one (its execution ends cancelled).
- An agent whose tool entry is `type: a2a` calls a remote agent served by the a2a-sdk's
  server (uvicorn on a loopback port), its token from the environment: as a tool of the
  agent loop, and as the agent of a collaborative agent's step."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.helpers.proto_helpers import get_artifact_text
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)

from tests.a2a_server import A2aTestServer
from tests.e2e.platform import RunningPlatform, start_platform
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.e2e

KEY = "team-a-key-0123456789abcdef0123456789"
TOKEN = "remote-token-5d1c9e"
RELEASE = threading.Event()  # lets the slow answers go at the end


def agent_files(card_url: str) -> dict[str, str]:
    model = "execution_mode: autonomous\nagent_type: t\nllm_config: {{provider: openai, model: {}}}\n"
    tool = (
        f'tools:\n  - name: remote\n    type: a2a\n    url: "{card_url}"\n'
        '    headers: {X-Remote-Token: "${REMOTE_TOKEN}"}\n'
        "    description: A remote agent that answers any question\n"
    )
    team = (
        "execution_mode: collaborative\nagent_type: t\nllm_config: {provider: openai, model: team}\n"
        "collaborative_config: {preferred_collaborators: [remote], max_plan_steps: 2}\n"
    )
    return {
        "helper": "name: helper\ndescription: Answers questions\n" + model.format("helper"),
        "caller": "name: caller\n" + model.format("caller") + tool,
        "team": "name: team\n" + team + tool,
    }


def vendor(body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    prompt = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
    tools = {tool["function"]["name"] for tool in body.get("tools", [])}
    if body["model"] == "helper":
        if "slow" in prompt:
            RELEASE.wait(60)
        return f"helper answers: {prompt}", None
    if body["model"] == "caller":
        if not results:
            return "", ("remote", {"message": "what is the answer?"})
        return f"the remote agent said <{results[0]}>", None
    if "submit_plan" in tools:  # the team's planner
        plan = {"steps": [{"id": "ask", "agent": "remote", "instruction": "ask the remote agent"}]}
        return "", ("submit_plan", plan)
    return "team report", None


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningPlatform, A2aTestServer]]:
    workdir = tmp_path_factory.mktemp("platform")
    with A2aTestServer(name="faraway") as remote, FakeOpenAI(script=vendor) as fake:
        (workdir / "agents").mkdir()
        for name, text in agent_files(remote.card_url).items():
            (workdir / "agents" / f"{name}.yml").write_text(text)
        running = start_platform(
            workdir,
            {
                "OPENAI_API_KEY": fake.api_key,
                "OPENAI_BASE_URL": fake.base_url,
                "REMOTE_TOKEN": TOKEN,
                "ENABLE_API_AUTH": "true",
                "API_KEYS": f"team-a:{KEY}",
            },
        )
        try:
            yield running, remote
        finally:
            RELEASE.set()
            assert running.stop() == 0, running.log_path.read_text()


@asynccontextmanager
async def a2a_client(
    running: RunningPlatform, agent: str, *, streaming: bool = False, polling: bool = False
) -> AsyncIterator[tuple[Client, AgentCard]]:
    """The a2a-sdk's client of an agent, from its card (read with the API key)."""
    async with httpx.AsyncClient(headers={"X-API-Key": KEY}, timeout=60) as http:
        card = await A2ACardResolver(http, f"{running.url('orchestrator')}/a2a/{agent}").get_agent_card()
        factory = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming, polling=polling))
        yield factory.create(card), card


def message(text: str) -> SendMessageRequest:
    return SendMessageRequest(
        message=Message(message_id=f"m-{time.monotonic_ns()}", role=Role.ROLE_USER, parts=[Part(text=text)])
    )


@pytest.mark.timeout(120)
def test_the_sdk_client_reads_the_card_sends_streams_and_gets(platform: tuple[RunningPlatform, A2aTestServer]) -> None:
    running, _ = platform
    orchestrator = running.url("orchestrator")

    async def scenario() -> tuple[Any, ...]:
        async with a2a_client(running, "helper") as (client, card):
            sent = [answer async for answer in client.send_message(message("what is A2A?"))]
            got = await client.get_task(GetTaskRequest(id=sent[-1].task.id))
        async with a2a_client(running, "helper", streaming=True) as (client, _):
            streamed = [event async for event in client.send_message(message("stream this"))]
        return card, sent, got, streamed

    card, sent, got, streamed = asyncio.run(scenario())

    assert card.name == "helper"
    assert card.capabilities.streaming
    assert card.supported_interfaces[0].url == f"{orchestrator}/a2a/helper"
    assert {"apiKey", "bearer"} <= set(card.security_schemes)
    task = sent[-1].task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert get_artifact_text(task.artifacts[0]) == "helper answers: what is A2A?"
    execution = httpx.get(f"{orchestrator}/executions/{task.id}", headers={"X-API-Key": KEY}, timeout=10).json()
    assert (execution["agent"], execution["status"], execution["tenant"]) == ("helper", "succeeded", "team-a")
    assert execution["input"] == {"prompt": "what is A2A?"}
    assert got.id == task.id
    assert got.status.state == TaskState.TASK_STATE_COMPLETED
    assert streamed[0].HasField("task")
    pieces = [e.artifact_update.artifact for e in streamed if e.HasField("artifact_update")]
    assert "".join(get_artifact_text(piece) for piece in pieces) == "helper answers: stream this"
    final = streamed[-1]
    assert final.HasField("status_update"), streamed
    assert final.status_update.status.state == TaskState.TASK_STATE_COMPLETED


@pytest.mark.timeout(120)
def test_the_sdk_client_cancels_a_slow_task(platform: tuple[RunningPlatform, A2aTestServer]) -> None:
    running, _ = platform

    async def scenario() -> tuple[Any, Any]:
        async with a2a_client(running, "helper", polling=True) as (client, _):
            sent = [answer async for answer in client.send_message(message("a slow question"))]
            task_id = sent[-1].task.id
            deadline = time.monotonic() + 30
            task = await client.get_task(GetTaskRequest(id=task_id))
            while task.status.state != TaskState.TASK_STATE_WORKING and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                task = await client.get_task(GetTaskRequest(id=task_id))
            cancelling = await client.cancel_task(CancelTaskRequest(id=task_id))
            while task.status.state != TaskState.TASK_STATE_CANCELED and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                task = await client.get_task(GetTaskRequest(id=task_id))
            return cancelling, task

    cancelling, task = asyncio.run(scenario())

    assert cancelling.id == task.id
    assert task.status.state == TaskState.TASK_STATE_CANCELED, task
    execution = httpx.get(
        f"{running.url('orchestrator')}/executions/{task.id}", headers={"X-API-Key": KEY}, timeout=10
    ).json()
    assert execution["status"] == "cancelled"


@pytest.mark.timeout(120)
def test_an_agent_calls_a_remote_a2a_agent_as_a_tool(platform: tuple[RunningPlatform, A2aTestServer]) -> None:
    running, remote = platform
    orchestrator = running.url("orchestrator")

    answer = httpx.post(
        f"{orchestrator}/agents/caller/invoke",
        json={"task_data": {"prompt": "ask the remote one"}},
        headers={"X-API-Key": KEY},
        timeout=60,
    )

    assert answer.status_code == 200, answer.text
    execution = answer.json()
    assert execution["output"] == "the remote agent said <remote faraway got: what is the answer?>"
    assert [(c["name"], c["error"]) for c in execution["tool_calls"]] == [("remote", None)]
    assert "what is the answer?" in remote.texts
    assert remote.headers[-1]["x-remote-token"] == TOKEN
    assert TOKEN not in running.log_path.read_text()


@pytest.mark.timeout(120)
def test_a_collaborative_step_runs_on_a_remote_a2a_agent(platform: tuple[RunningPlatform, A2aTestServer]) -> None:
    running, remote = platform
    orchestrator = running.url("orchestrator")
    key = {"X-API-Key": KEY}

    answer = httpx.post(
        f"{orchestrator}/agents/team/invoke", json={"task_data": {"prompt": "the big task"}}, headers=key, timeout=60
    )

    assert answer.status_code == 200, answer.text
    execution = answer.json()
    assert (execution["status"], execution["output"]) == ("succeeded", "team report")
    run = httpx.get(f"{orchestrator}/plan-runs/{execution['execution_id']}", headers=key, timeout=10).json()
    [step] = run["steps"]
    assert (step["agent"], step["status"]) == ("remote", "succeeded")
    assert step["output"].startswith("remote faraway got: ask the remote agent")
    assert "the big task" in step["output"]
    sent = next(text for text in remote.texts if text.startswith("ask the remote agent"))
    assert "This step is part of a larger task:\nthe big task" in sent
    recorded = httpx.get(f"{orchestrator}/executions/{step['execution_id']}", headers=key, timeout=10).json()
    assert (recorded["agent"], recorded["status"], recorded["tenant"]) == ("remote", "succeeded", "team-a")
