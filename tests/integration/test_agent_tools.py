"""Agents calling tools end to end: a real MCP server (FastMCP, on a loopback port), an
agent file naming it, a node running the agent loop with the `scripted` provider or the
OpenAI SDK against its loopback fake. The tool's result reaches the model and the answer;
independent calls overlap; a failing tool and a slow one become error results and the run
succeeds; every call is recorded on the execution and streamed; a server that drops is
reconnected on the next execution; one unreachable at load leaves the agent degraded; the
agent's description says which tools' calls may be repeated after a crash."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.domain.llm import LLMRequest
from agentrunner.node import Node
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import BUSES, node_on
from tests.mcp_server import HINTS, McpHttpServer
from tests.ports import free_port


def agent_yaml(url: str, *, provider: str = "scripted", extra: str = "") -> str:
    return (
        "name: toolsmith\nagent_type: t\nexecution_mode: autonomous\n"
        f"llm_config: {{provider: {provider}, model: gpt-4o, max_attempts: 1}}\n"
        "retry_config: {max_retries: 0}\n"
        "tools:\n"
        f"  - {{name: kit, type: mcp, url: '{url}', timeout_seconds: 1.5}}\n"
        "  - {name: current_time}\n" + extra
    )


def _tool_results(request: LLMRequest) -> dict[str, str]:
    """The tool results the model was sent, by call id."""
    return {m.tool_call_id or "": m.content for m in request.messages if m.role == "tool"}


async def _script(request: LLMRequest) -> Any:
    results = _tool_results(request)
    prompt = next(m.content for m in request.messages if m.role == "user")
    if prompt == "loop":  # asks for the time forever
        rounds = sum(m.role == "tool" for m in request.messages) + 1
        return {"text": f"round {rounds}", "tool_calls": [{"name": "current_time", "arguments": {}}]}
    if not results:
        if prompt == "both":
            await asyncio.sleep(0.3)  # time for a watcher to connect before the calls end
            return {
                "tool_calls": [
                    {"id": "a", "name": "kit__slow", "arguments": {"seconds": 0.6}},
                    {"id": "b", "name": "kit__slow", "arguments": {"seconds": 0.6}},
                    {"id": "c", "name": "kit__add", "arguments": {"a": 2, "b": 3}},
                ]
            }
        if prompt == "errors":
            return {
                "tool_calls": [
                    {"id": "f", "name": "kit__fail", "arguments": {"reason": "disk full"}},
                    {"id": "t", "name": "kit__slow", "arguments": {"seconds": 5}},
                    {"id": "v", "name": "kit__add", "arguments": {"a": "two"}},
                    {"id": "u", "name": "nope", "arguments": {}},
                ]
            }
        return {"tool_calls": [{"id": "c", "name": "kit__add", "arguments": {"a": 2, "b": 3}}]}
    return "answer: " + json.dumps(results, sort_keys=True)


@pytest.fixture
def mcp() -> Iterator[McpHttpServer]:
    with McpHttpServer() as server:
        yield server


@pytest.fixture(params=BUSES)
async def node(request: pytest.FixtureRequest, tmp_path: Path, mcp: McpHttpServer) -> AsyncIterator[Node]:
    extra = "max_tool_iterations: 2\n"
    async with node_on(
        request.param, tmp_path, {"toolsmith.yml": agent_yaml(mcp.url, extra=extra)}, script=_script
    ) as n:
        yield n


async def _invoke(node: Node, prompt: str) -> dict[str, Any]:
    app = node.apps()["orchestrator"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o", timeout=30) as http:
        answer = await http.post("/agents/toolsmith/invoke", json={"task_data": {"prompt": prompt}, "wait": 20})
        assert answer.status_code == 200, answer.text
        execution_id = answer.json()["execution_id"]
        stored = await http.get(f"/executions/{execution_id}")
    result: dict[str, Any] = stored.json()
    return result


async def test_the_tool_result_reaches_the_model_and_the_answer(node: Node) -> None:
    execution = await _invoke(node, "add")

    assert execution["status"] == "succeeded"
    assert execution["output"] == 'answer: {"c": "5.0"}'
    [call] = execution["tool_calls"]
    assert (call["name"], call["arguments"], call["result"], call["error"]) == (
        "kit__add",
        {"a": 2, "b": 3},
        "5.0",
        None,
    )
    assert call["duration_ms"] > 0


async def test_independent_calls_run_at_the_same_time(node: Node) -> None:
    execution = await _invoke(node, "both")

    calls = {call["call_id"]: call for call in execution["tool_calls"]}
    first, second = calls["a"], calls["b"]
    start = [datetime.fromisoformat(c["started_at"]) for c in (first, second)]
    end = [datetime.fromisoformat(c["finished_at"]) for c in (first, second)]
    assert max(start) < min(end)  # the two 0.6 s calls overlap
    assert (max(end) - min(start)).total_seconds() < 1.1
    assert execution["output"] == 'answer: {"a": "slept 0.6", "b": "slept 0.6", "c": "5.0"}'


async def test_failures_are_error_results_and_the_run_succeeds(node: Node) -> None:
    execution = await _invoke(node, "errors")

    assert execution["status"] == "succeeded"
    errors = {call["call_id"]: call["error"] for call in execution["tool_calls"]}
    assert "disk full" in errors["f"]
    assert errors["t"] == "timed out after 1.5 s"
    assert errors["v"].startswith("invalid arguments: ")
    assert errors["u"] == "unknown tool 'nope'"
    sent = json.loads(execution["output"].removeprefix("answer: "))
    assert all(content.startswith("error: ") for content in sent.values())


async def test_the_loop_stops_after_max_tool_iterations(node: Node) -> None:
    execution = await _invoke(node, "loop")

    assert execution["status"] == "succeeded"
    assert [call["iteration"] for call in execution["tool_calls"]] == [1, 2]
    assert execution["output"] == "round 3"  # the third answer still asked: not run
    assert json.loads(execution["tool_calls"][0]["result"])["timezone"] == "UTC"


async def test_each_tool_call_is_streamed_to_watchers(node: Node) -> None:
    app = node.apps()["orchestrator"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o", timeout=30) as http:
        accepted = await http.post("/agents/toolsmith/invoke", json={"task_data": {"prompt": "both"}, "wait": 0})
        body = (await http.get(f"/executions/{accepted.json()['execution_id']}/events")).text

    kinds = [line.removeprefix("event: ") for line in body.splitlines() if line.startswith("event: ")]
    assert kinds.count("tool_call") == 3
    assert kinds[-1] == "finished"


async def test_a_server_that_dropped_is_reconnected_on_the_next_execution(node: Node, mcp: McpHttpServer) -> None:
    before = await _invoke(node, "add")
    mcp.stop()
    during = await _invoke(node, "add")
    mcp.start()
    after = await _invoke(node, "add")

    assert before["tool_calls"][0]["result"] == "5.0"
    assert during["status"] == "succeeded"
    assert during["tool_calls"][0]["result"] is None
    assert "MCP server 'kit'" in during["tool_calls"][0]["error"]
    assert after["tool_calls"][0]["result"] == "5.0"


async def test_an_unreachable_server_at_load_leaves_the_agent_degraded(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    async with node_on("memory", tmp_path, {"toolsmith.yml": agent_yaml(url)}, script=_script) as node:
        app = node.apps()["orchestrator"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o", timeout=30) as http:
            agent = (await http.get("/agents/toolsmith")).json()
        execution = await _invoke(node, "time please")

    assert agent["status"] == "degraded"
    [reason] = agent["reasons"]
    assert f"MCP server {url} unreachable" in reason
    assert agent["offered_tools"] == ["current_time"]
    # It still runs, without the server's tools: the model's call of one is an error result.
    assert execution["status"] == "succeeded"
    assert execution["tool_calls"][0]["error"] == "unknown tool 'kit__add'"


async def test_the_openai_sdk_drives_the_loop_in_the_vendors_tool_call_format(
    tmp_path: Path, mcp: McpHttpServer
) -> None:
    def vendor(body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if not results:
            return "", ("kit__add", {"a": 40, "b": 2})
        return f"The sum is {results[0]}.", None

    with FakeOpenAI(script=vendor) as fake:
        async with node_on(
            "memory",
            tmp_path,
            {"toolsmith.yml": agent_yaml(mcp.url, provider="openai")},
            openai_api_key=fake.api_key,
            openai_base_url=fake.base_url,
        ) as node:
            execution = await _invoke(node, "add")

    assert execution["output"] == "The sum is 42.0."
    first, second = fake.requests
    assert {tool["function"]["name"] for tool in first["tools"]} >= {"kit__add", "kit__slow", "current_time"}
    assert first["tools"][0]["function"]["parameters"]["properties"]
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"][0]["function"] == {"name": "kit__add", "arguments": '{"a": 40, "b": 2}'}
    assert tool == {"role": "tool", "content": "42.0", "tool_call_id": "call_fake1"}
    assert execution["tool_calls"][0]["result"] == "42.0"


async def test_a_slow_tool_does_not_hold_the_loop_past_its_timeout(node: Node) -> None:
    started = asyncio.get_running_loop().time()
    execution = await _invoke(node, "errors")

    assert asyncio.get_running_loop().time() - started < 4  # the 5 s call was cut at 1.5 s
    assert execution["status"] == "succeeded"


CONTINUOUS = """name: rememberer
agent_type: t
execution_mode: continuous
llm_config: {provider: scripted, model: s}
tools:
  - {name: set_state}
  - {name: get_state}
"""


def _remember(request: LLMRequest) -> Any:
    """Turn 'my name is X' stores X; turn 'who am I' reads it back."""
    prompt = [m.content for m in request.messages if m.role == "user"][-1]
    results = [m.content for m in request.messages if m.role == "tool"]
    if results:
        return "noted" if prompt.startswith("my name") else f"you are {json.loads(results[-1])['value']}"
    if prompt.startswith("my name is "):
        return {"tool_calls": [{"name": "set_state", "arguments": {"key": "name", "value": prompt[11:]}}]}
    return {"tool_calls": [{"name": "get_state", "arguments": {"key": "name"}}]}


async def test_a_continuous_agent_keeps_memory_through_its_state_tools(tmp_path: Path) -> None:
    async with node_on("memory", tmp_path, {"rememberer.yml": CONTINUOUS}, script=_remember) as node:
        app = node.apps()["orchestrator"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o", timeout=30) as http:

            async def say(text: str) -> dict[str, Any]:
                body = {"task_data": {"prompt": text}, "session_id": "s-1", "wait": 20}
                answer: dict[str, Any] = (await http.post("/agents/rememberer/invoke", json=body)).json()
                return answer

            stored = await say("my name is Ada")
            recalled = await say("who am I")
        state = await node.store.sessions.load_state("rememberer", "s-1")

    assert stored["output"] == "noted"
    assert recalled["output"] == "you are Ada"
    assert state.memory == {"name": "Ada"}
    # The turns' history is saved too, after the memory writes of the same turns.
    assert [item["content"] for item in state.history] == ["my name is Ada", "noted", "who am I", "you are Ada"]


async def test_a_server_that_comes_up_after_load_gives_the_agent_its_tools_back(tmp_path: Path) -> None:
    late = McpHttpServer()  # its port is chosen, nothing listens yet
    files = {"toolsmith.yml": agent_yaml(late.url)}
    async with node_on("memory", tmp_path, files, script=_script, mcp_retry_seconds=0.2) as node:
        before = node.registry.get("toolsmith")
        with late:
            deadline = time.monotonic() + 20
            # Looked at every turn of the loop: the first moment it shows available, its
            # tools are there (a reload once showed it available with none while connecting).
            while node.registry.get("toolsmith").status.value != "available":
                assert time.monotonic() < deadline, "the agent never got its tools back"
                await asyncio.sleep(0)
            after = node.registry.get("toolsmith")
            execution = await _invoke(node, "add")

    assert before.status.value == "degraded"
    assert (after.status.value, after.reasons) == ("available", ())
    assert "kit__add" in after.tools
    assert execution["tool_calls"][0]["result"] == "5.0"


async def test_the_agents_description_shows_which_tool_calls_may_be_repeated_after_a_crash(
    tmp_path: Path, mcp: McpHttpServer
) -> None:
    extra = (
        f"  - {{name: careful, type: mcp, url: '{mcp.url}', idempotent: false}}\n"
        "  - {name: http_request, allowed_hosts: [example.com], allowed_methods: [GET, POST]}\n"
        "  - {name: publish_event}\n"
    )
    async with node_on("memory", tmp_path, {"toolsmith.yml": agent_yaml(mcp.url, extra=extra)}, script=_script) as n:
        app = n.apps()["orchestrator"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o", timeout=30) as http:
            agent = (await http.get("/agents/toolsmith")).json()

    repeatable = agent["offered_tools_repeatable"]
    assert set(repeatable) == set(agent["offered_tools"])
    assert {name: repeatable[name] for name in ("current_time", "http_request", "publish_event")} == {
        "current_time": "always",
        "http_request": "per_call",
        "publish_event": "never",
    }
    # As the server's annotations say, unless the entry overrides them.
    assert {case: repeatable[f"kit__hint_{case}"] for case in HINTS} == {
        case: "always" if safe else "never" for case, (_, safe) in HINTS.items()
    }
    assert repeatable["kit__add"] == "never"
    assert {repeatable[name] for name in repeatable if name.startswith("careful__")} == {"never"}
