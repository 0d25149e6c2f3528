"""Agents as an MCP server, as a user reaches them: `agentrunner up` with API keys, and the
`mcp` SDK's own client on `/mcp` of its orchestrator. The client lists the agents (one that
opted out is absent), calls one (the execution is recorded for the caller's tenant, as a
REST invocation's is), gets a structured answer as structured content, gets a budget's
refusal as a tool error with its code, receives progress notifications while an agent
runs, cancels the execution by dropping the call, and continues a continuous agent's
session with the `session_id` its first answer named. Then a second `agentrunner up`,
whose agent has the first one's `/mcp` as a `type: mcp` tool, answers with what an agent
of the first one said.

The model of every agent is the loopback OpenAI fake; a prompt starting with `slow` holds
its answer until the test releases it (or 60 s)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession
from mcp.types import CallToolResult

from tests.e2e.platform import RunningPlatform, start_platform
from tests.fakes.openai_server import FakeOpenAI
from tests.mcp_client import mcp_session_over, text_of
from tests.security.conftest import TEAM_A_KEY, TEAM_B_KEY, TENANTS_ENV

pytestmark = pytest.mark.e2e

SERVED_AGENTS = {
    "helper": """
name: helper
agent_type: assistant
execution_mode: autonomous
description: Answers a question in one line.
llm_config: {provider: openai, model: gpt-4o}
""",
    "hidden": """
name: hidden
agent_type: assistant
execution_mode: autonomous
llm_config: {provider: echo, model: echo}
expose: {mcp: false}
""",
    "structured": """
name: structured
agent_type: assistant
execution_mode: autonomous
description: Answers as JSON.
llm_config: {provider: echo, model: echo}
output_schema:
  type: object
  properties: {answer: {type: string}}
  required: [answer]
""",
    "costly": """
name: costly
agent_type: assistant
execution_mode: autonomous
llm_config: {provider: openai, model: gpt-4o}
limits: {budget_usd: 0.00000001}
""",
    "chat": """
name: chat
agent_type: assistant
execution_mode: continuous
system_prompt: You are chat.
llm_config: {provider: openai, model: gpt-4o}
""",
}
CALLER = """
name: caller
agent_type: assistant
execution_mode: autonomous
llm_config: {provider: openai, model: gpt-4o}
tools:
  - name: remote
    type: mcp
    url: "%s/mcp"
    headers: {X-API-Key: "${REMOTE_KEY}"}
"""

GATES: dict[str, threading.Event] = {}
ASKED: set[str] = set()  # the prompts the model was asked, as it is asked them


def gate(prompt: str) -> threading.Event:
    return GATES.setdefault(prompt, threading.Event())


def vendor(body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    """The model of every agent: `caller` asks the remote helper, then quotes it; the
    others answer their prompt (a `slow` one once the test opens its gate)."""
    offered = {tool["function"]["name"] for tool in body.get("tools") or []}
    results = [str(m["content"]) for m in body["messages"] if m["role"] == "tool"]
    if "remote__helper" in offered:
        if not results:
            return "", ("remote__helper", {"prompt": "ping from afar"})
        return f"the remote agent said: {results[0]}", None
    prompt = next(str(m["content"]) for m in reversed(body["messages"]) if m["role"] == "user")
    if body["messages"][0]["content"] == "You are chat.":
        return f"turn {sum(m['role'] == 'user' for m in body['messages'])}: {prompt}", None
    ASKED.add(prompt)
    if prompt.startswith("slow"):
        gate(prompt).wait(60)
    return f"helper: {prompt}", None


@pytest.fixture(scope="module")
def platforms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningPlatform, RunningPlatform]]:
    """The served platform, and the calling one whose agent uses it as an MCP tool."""
    served_dir, caller_dir = tmp_path_factory.mktemp("served"), tmp_path_factory.mktemp("caller")
    with FakeOpenAI(script=vendor) as fake:
        openai = {"OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url}
        (served_dir / "agents").mkdir()
        for name, text in SERVED_AGENTS.items():
            (served_dir / "agents" / f"{name}.yml").write_text(text)
        served = start_platform(served_dir, {**TENANTS_ENV, **openai})
        try:
            (caller_dir / "agents").mkdir()
            (caller_dir / "agents" / "caller.yml").write_text(CALLER % served.url("orchestrator"))
            caller = start_platform(caller_dir, {**openai, "REMOTE_KEY": TEAM_B_KEY})
            try:
                yield served, caller
            finally:
                for event in GATES.values():
                    event.set()
                assert caller.stop() == 0, caller.log_path.read_text()
        finally:
            assert served.stop() == 0, served.log_path.read_text()


@asynccontextmanager
async def mcp_session(platform: RunningPlatform, key: str) -> AsyncIterator[ClientSession]:
    client = httpx.AsyncClient(headers={"X-API-Key": key}, timeout=httpx.Timeout(30.0, read=120.0))
    async with client, mcp_session_over(client, f"{platform.url('orchestrator')}/mcp") as session:
        yield session


def rest(platform: RunningPlatform, key: str) -> httpx.Client:
    return httpx.Client(base_url=platform.url("orchestrator"), headers={"X-API-Key": key}, timeout=10)


async def until(check: Callable[[], Any], seconds: float = 30.0) -> Any:
    """`check()` once it is truthy, polled until `seconds` have passed (then it fails)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = await anyio.to_thread.run_sync(check)
        if value:
            return value
        await anyio.sleep(0.1)
    raise AssertionError(f"not so within {seconds} s")


@pytest.mark.timeout(240)
async def test_the_mcp_client_lists_and_calls_agents_as_its_tenant(
    platforms: tuple[RunningPlatform, RunningPlatform],
) -> None:
    served, _ = platforms
    async with mcp_session(served, TEAM_A_KEY) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        answer = await session.call_tool("helper", {"prompt": "what is MCP?"})
        structured = await session.call_tool("structured", {"prompt": json.dumps({"answer": "forty-two"})})

    assert set(tools) == {"helper", "structured", "costly", "chat"}  # `hidden` opted out
    assert tools["helper"].description == "Answers a question in one line."
    assert tools["helper"].inputSchema["required"] == ["prompt"]
    assert tools["helper"].outputSchema is None
    assert tools["structured"].outputSchema == {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }

    assert not answer.isError
    assert text_of(answer) == "helper: what is MCP?"
    assert answer.meta is not None
    execution_id = answer.meta["agentrunner/execution_id"]
    with rest(served, TEAM_A_KEY) as client:
        recorded = client.get(f"/executions/{execution_id}").json()
        listed = client.get("/executions", params={"agent": "helper"}).json()["items"]
    assert recorded["status"] == "succeeded"
    assert recorded["tenant"] == "team-a"
    assert recorded["input"] == {"prompt": "what is MCP?"}
    assert execution_id in {item["execution_id"] for item in listed}

    assert not structured.isError
    assert structured.structuredContent == {"answer": "forty-two"}


@pytest.mark.timeout(240)
async def test_a_continuous_agent_continues_the_session_its_first_answer_names(
    platforms: tuple[RunningPlatform, RunningPlatform],
) -> None:
    served, _ = platforms
    async with mcp_session(served, TEAM_A_KEY) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        first = await session.call_tool("chat", {"prompt": "hello"})
        assert first.meta is not None
        session_id = first.meta["agentrunner/session_id"]
        second = await session.call_tool("chat", {"prompt": "again", "session_id": session_id})
        other = await session.call_tool("chat", {"prompt": "someone else"})

    assert set(tools["chat"].inputSchema["properties"]) == {"prompt", "session_id"}
    assert (text_of(first), text_of(second), text_of(other)) == (
        "turn 1: hello",
        "turn 2: again",
        "turn 1: someone else",
    )
    assert second.meta is not None
    assert second.meta["agentrunner/session_id"] == session_id
    with rest(served, TEAM_A_KEY) as client:
        recorded = client.get(f"/executions/{second.meta['agentrunner/execution_id']}").json()
    assert recorded["input"] == {"prompt": "again"}  # the session is not task_data
    assert recorded["session_id"] == session_id


@pytest.mark.timeout(240)
async def test_a_budget_refusal_reaches_the_client_as_a_tool_error_with_its_code(
    platforms: tuple[RunningPlatform, RunningPlatform],
) -> None:
    served, _ = platforms
    async with mcp_session(served, TEAM_A_KEY) as session:
        first = await session.call_tool("costly", {"prompt": "spend it"})
        assert not first.isError, text_of(first)
        refused = await until_refused(session)
    assert text_of(refused).startswith("budget_exceeded: ")
    assert "limits.budget_usd" in text_of(refused)


async def until_refused(session: ClientSession) -> CallToolResult:
    """The answer of `costly` once its spend is counted (at its end, asynchronously)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = await session.call_tool("costly", {"prompt": "spend more"})
        if result.isError:
            return result
    raise AssertionError("the budget never refused a call")


@pytest.mark.timeout(240)
async def test_progress_notifications_come_while_the_agent_runs(
    platforms: tuple[RunningPlatform, RunningPlatform],
) -> None:
    served, _ = platforms
    prompt = "slow: report progress"
    seen: list[tuple[float, str | None]] = []

    async def progressed(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))
        gate(prompt).set()  # one notification is enough: let the model answer

    async with mcp_session(served, TEAM_A_KEY) as session:
        result = await session.call_tool("helper", {"prompt": prompt}, progress_callback=progressed)
    assert not result.isError, text_of(result)
    assert text_of(result) == f"helper: {prompt}"
    assert seen[0] == (1, "execution running")


@pytest.mark.timeout(240)
async def test_dropping_the_call_cancels_the_execution(platforms: tuple[RunningPlatform, RunningPlatform]) -> None:
    served, _ = platforms
    prompt = "slow: never answered"

    def running() -> str | None:
        if prompt not in ASKED:  # asked: its attempt runs (a cancel before that may find none yet)
            return None
        with rest(served, TEAM_A_KEY) as client:
            items = client.get("/executions", params={"agent": "helper", "status": "running"}).json()["items"]
        return next((item["execution_id"] for item in items if item["input"] == {"prompt": prompt}), None)

    async with mcp_session(served, TEAM_A_KEY) as session, anyio.create_task_group() as group:
        group.start_soon(session.call_tool, "helper", {"prompt": prompt})
        execution_id = await until(running)
        group.cancel_scope.cancel()  # the client gives up: its request stream closes
    # The session (and its HTTP connections) is closed now.

    def cancelled() -> bool:
        with rest(served, TEAM_A_KEY) as client:
            return bool(client.get(f"/executions/{execution_id}").json()["status"] == "cancelled")

    assert await until(cancelled)
    assert not gate(prompt).is_set()  # nobody let the model answer: the cancellation ended it
    records = served.log_records()
    cancels = [r for r in records if r["message"] == "mcp call cancelled"]
    assert [r["metadata"]["execution_id"] for r in cancels] == [execution_id]
    assert [json.dumps(r) for r in records if r["level"] in ("ERROR", "CRITICAL")] == []
    # One line per MCP request, ours: none of the SDK's four.
    assert [r for r in records if r["message"].startswith(("StreamableHTTP", "Processing request"))] == []
    assert any(r["message"] == "request" and r["metadata"]["path"] == "/mcp" for r in records)


@pytest.mark.timeout(240)
def test_an_agent_of_one_agentrunner_calls_an_agent_of_another_as_an_mcp_tool(
    platforms: tuple[RunningPlatform, RunningPlatform],
) -> None:
    served, caller = platforms
    with httpx.Client(base_url=caller.url("orchestrator"), timeout=60) as client:
        answer = client.post("/agents/caller/invoke", json={"task_data": {"prompt": "ask the other one"}, "wait": 50})
    assert answer.status_code == 200, answer.text
    execution = answer.json()
    assert execution["status"] == "succeeded", execution
    assert execution["output"] == "the remote agent said: helper: ping from afar"
    assert [call["name"] for call in execution["tool_calls"]] == ["remote__helper"]
    with rest(served, TEAM_B_KEY) as client:  # the key the caller's tool sends
        remote = client.get("/executions", params={"agent": "helper"}).json()["items"]
    assert [item["input"] for item in remote] == [{"prompt": "ping from afar"}]
    assert remote[0]["tenant"] == "team-b"
