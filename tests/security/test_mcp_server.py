"""The MCP server (`/mcp`) played by an attacker: no key or a wrong one is a 401; what one
tenant's tool call starts is not another tenant's to see; arguments past MAX_TASK_BYTES, or
a body past MAX_REQUEST_BYTES, are refused with a short error; an agent that opted out
(`expose: {mcp: false}`) is neither listed nor callable by name; arguments that do not
follow the agent's input_schema start nothing; a GET holds no event stream open, and
malformed JSON is a short 400.

In process, on the node's own orchestrator app (its API key middleware included), with the
`mcp` SDK's own client. Agents are visible to every tenant (they have no owner): what is a
tenant's own is the executions its calls start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from mcp import ClientSession

from agentrunner.domain.llm import LLMRequest
from agentrunner.node import Node
from tests.mcp_client import mcp_session_over, text_of
from tests.security.conftest import TEAM_A_KEY, TEAM_B_KEY, tenants_settings

MAX_TASK_BYTES = 2048
MAX_REQUEST_BYTES = 64 * 1024
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

AGENTS = {
    "open": """
name: open
agent_type: assistant
execution_mode: autonomous
description: Answers anyone.
llm_config: {provider: scripted, model: s}
""",
    "secret": """
name: secret
agent_type: assistant
execution_mode: autonomous
llm_config: {provider: scripted, model: s}
expose: {mcp: false}
""",
    "typed": """
name: typed
agent_type: assistant
execution_mode: autonomous
llm_config: {provider: scripted, model: s}
input_schema:
  type: object
  properties: {city: {type: string, maxLength: 50}}
  required: [city]
  additionalProperties: false
""",
}


def _reply(request: LLMRequest) -> str:
    return "answered: " + next(str(m.content) for m in request.messages if m.role == "user")


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    agents = tmp_path / "agents"
    agents.mkdir()
    for name, text in AGENTS.items():
        (agents / f"{name}.yml").write_text(text)
    settings = tenants_settings(tmp_path).model_copy(
        update={"max_task_bytes": MAX_TASK_BYTES, "max_request_bytes": MAX_REQUEST_BYTES}
    )
    running = Node(settings, script=_reply)
    async with running.running():
        yield running


@asynccontextmanager
async def http(node: Node, key: str | None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"X-API-Key": key} if key else {}
    transport = httpx.ASGITransport(app=node.apps()["orchestrator"])
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", headers=headers) as client:
        yield client


@asynccontextmanager
async def mcp_session(node: Node, key: str) -> AsyncIterator[ClientSession]:
    async with http(node, key) as client, mcp_session_over(client, "http://127.0.0.1/mcp") as session:
        yield session


async def test_no_key_or_a_wrong_key_is_refused_before_any_mcp_message(node: Node) -> None:
    for key in (None, "not-a-key-of-this-platform-0123456789abcdef"):
        async with http(node, key) as client:
            answer = await client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "unauthorized"
        assert "jsonrpc" not in answer.text


async def test_a_tenant_never_sees_the_executions_another_tenant_started_over_mcp(node: Node) -> None:
    async with mcp_session(node, TEAM_A_KEY) as session:
        result = await session.call_tool("open", {"prompt": "team-a's private question"})
    assert not result.isError, text_of(result)
    assert result.meta is not None
    execution_id = result.meta["agentrunner/execution_id"]
    async with http(node, TEAM_A_KEY) as a, http(node, TEAM_B_KEY) as b:
        assert (await a.get(f"/executions/{execution_id}")).json()["tenant"] == "team-a"
        assert (await b.get(f"/executions/{execution_id}")).status_code == 404
        assert (await b.post(f"/executions/{execution_id}/cancel")).status_code == 404
        listed = (await b.get("/executions", params={"agent": "open"})).json()["items"]
    assert listed == []


async def test_arguments_over_max_task_bytes_are_a_short_tool_error_and_start_nothing(node: Node) -> None:
    async with mcp_session(node, TEAM_A_KEY) as session:
        result = await session.call_tool("open", {"prompt": "x" * (MAX_TASK_BYTES * 4)})
    assert result.isError
    assert text_of(result).startswith("payload_too_large: arguments is")
    assert len(text_of(result)) < 300  # the arguments are not echoed back
    async with http(node, TEAM_A_KEY) as client:
        assert (await client.get("/executions", params={"agent": "open"})).json()["items"] == []


async def test_a_body_over_max_request_bytes_is_refused_before_it_is_read_whole(node: Node) -> None:
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "open", "arguments": {"prompt": "y" * (MAX_REQUEST_BYTES * 2)}},
    }
    async with http(node, TEAM_A_KEY) as client:
        answer = await client.post("/mcp", json=call, headers=MCP_HEADERS)
    assert answer.status_code == 413
    assert len(answer.content) < 500


async def test_an_agent_that_opted_out_is_neither_listed_nor_callable_by_name(node: Node) -> None:
    async with mcp_session(node, TEAM_A_KEY) as session:
        names = {tool.name for tool in (await session.list_tools()).tools}
        result = await session.call_tool("secret", {"prompt": "let me in"})
    assert names == {"open", "typed"}
    assert result.isError
    assert text_of(result).startswith("agent_not_found: no tool 'secret'")
    async with http(node, TEAM_A_KEY) as client:
        assert (await client.get("/executions", params={"agent": "secret"})).json()["items"] == []


async def test_arguments_outside_the_input_schema_start_nothing(node: Node) -> None:
    async with mcp_session(node, TEAM_A_KEY) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        wrong = await session.call_tool("typed", {"city": "Paris", "drop": "table"})
        missing = await session.call_tool("open", {"question": "no prompt"})
    assert tools["typed"].inputSchema["required"] == ["city"]
    assert wrong.isError
    assert text_of(wrong).startswith("input_invalid: ")
    assert "drop" in text_of(wrong)
    assert missing.isError
    assert "'prompt' is a required property" in text_of(missing)
    async with http(node, TEAM_A_KEY) as client:
        rest = await client.post("/agents/typed/invoke", json={"task_data": {"city": 7}})
        assert rest.status_code == 422
        assert rest.json()["error"]["code"] == "input_invalid"
        assert "city: 7 is not of type 'string'" in rest.json()["error"]["message"]
        for agent in ("typed", "open"):
            assert (await client.get("/executions", params={"agent": agent})).json()["items"] == []


async def test_a_get_holds_no_stream_open_and_bad_json_is_a_short_error(node: Node) -> None:
    async with http(node, TEAM_A_KEY) as client, asyncio.timeout(20):
        # A stateless server has nothing to send unasked: no event stream to hold open.
        opened = await client.get("/mcp", headers={"Accept": "text/event-stream"})
        garbled = await client.post("/mcp", content=b'{"jsonrpc": "2.0", "id": 1, "method": ', headers=MCP_HEADERS)
    assert opened.status_code == 405
    assert opened.json()["error"]["code"] == "method_not_allowed"
    assert garbled.status_code == 400
    assert garbled.json()["error"]["code"] == -32700
    assert len(garbled.content) < 500
