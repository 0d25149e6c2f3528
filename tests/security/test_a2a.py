"""The A2A endpoints (issue 26) against hostile callers: no key gets nothing (card, list,
JSON-RPC), a tenant cannot read or cancel another tenant's task (nor reach a task through
another agent's URL), an oversized message is refused with a short error before anything
runs, and an agent with `expose: {a2a: false}` has no card and takes no message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.domain.llm import LLMRequest
from agentrunner.node import Node
from tests.a2a_server import A2aTestServer
from tests.security.conftest import ADMIN_KEY, TEAM_A_KEY, TEAM_B_KEY, orchestrator_client, tenants_settings

A = {"X-API-Key": TEAM_A_KEY}
B = {"X-API-Key": TEAM_B_KEY}
V1 = {"A2A-Version": "1.0"}
MAX_TASK_BYTES = 4096

AGENT = """
name: {name}
agent_type: helper
execution_mode: autonomous
llm_config: {{provider: echo, model: echo}}
{extra}
"""


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "open.yml").write_text(AGENT.format(name="open", extra=""))
    (agents / "other.yml").write_text(AGENT.format(name="other", extra=""))
    (agents / "hidden.yml").write_text(AGENT.format(name="hidden", extra="expose: {a2a: false}"))
    settings = tenants_settings(tmp_path, agents).model_copy(update={"max_task_bytes": MAX_TASK_BYTES})
    node = Node(settings)
    async with node.running(), orchestrator_client(node) as client:
        yield client


def rpc(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


def send(text: str) -> dict[str, Any]:
    return rpc("SendMessage", {"message": {"role": "ROLE_USER", "messageId": "m-1", "parts": [{"text": text}]}})


async def test_every_a2a_path_needs_a_key(http: httpx.AsyncClient) -> None:
    card = await http.get("/a2a/open/.well-known/agent-card.json")
    listed = await http.get("/a2a")
    sent = await http.post("/a2a/open", json=send("hello"), headers=V1)
    legacy = await http.post(
        "/a2a/open",
        json=rpc(
            "message/send", {"message": {"role": "user", "messageId": "m", "parts": [{"kind": "text", "text": "x"}]}}
        ),
    )

    assert [r.status_code for r in (card, listed, sent, legacy)] == [401, 401, 401, 401]
    assert (await http.get("/a2a/open/.well-known/agent-card.json", headers=A)).status_code == 200
    executions = await http.get("/executions", headers={"X-API-Key": ADMIN_KEY})
    assert executions.json()["items"] == []


async def test_another_tenants_task_is_not_found_to_get_or_cancel(http: httpx.AsyncClient) -> None:
    sent = await http.post("/a2a/open", json=send("team a's secret"), headers=A | V1)
    task = sent.json()["result"]["task"]

    got = await http.post("/a2a/open", json=rpc("GetTask", {"id": task["id"]}), headers=B | V1)
    cancelled = await http.post("/a2a/open", json=rpc("CancelTask", {"id": task["id"]}), headers=B | V1)
    legacy = await http.post("/a2a/open", json=rpc("tasks/get", {"id": task["id"]}), headers=B)
    through_other_agent = await http.post("/a2a/other", json=rpc("GetTask", {"id": task["id"]}), headers=A | V1)
    own = await http.post("/a2a/open", json=rpc("GetTask", {"id": task["id"]}), headers=A | V1)

    assert task["status"]["state"] == "TASK_STATE_COMPLETED", sent.text
    for refused in (got, cancelled, legacy, through_other_agent):
        error = refused.json()["error"]
        assert error["code"] == -32001, refused.text  # TaskNotFoundError
        assert "secret" not in refused.text
    assert own.json()["result"]["artifacts"][0]["parts"][0]["text"] == "team a's secret"


async def test_an_oversized_message_is_refused_before_anything_runs(http: httpx.AsyncClient) -> None:
    sent = await http.post("/a2a/open", json=send("x" * (MAX_TASK_BYTES + 10)), headers=A | V1)

    error = sent.json()["error"]
    assert error["code"] == -32602, sent.text  # invalid params
    assert "over the limit of 4096 bytes" in error["message"]
    assert len(sent.content) < 1000
    executions = await http.get("/executions", headers=A)
    assert executions.json()["items"] == []


async def test_an_agent_not_exposed_over_a2a_has_no_card_and_takes_no_message(http: httpx.AsyncClient) -> None:
    card = await http.get("/a2a/hidden/.well-known/agent-card.json", headers=A)
    listed = await http.get("/a2a", headers=A)
    sent = await http.post("/a2a/hidden", json=send("hello"), headers=A | V1)
    unknown = await http.post("/a2a/nobody", json=send("hello"), headers=A | V1)

    assert (card.status_code, card.json()["error"]["code"]) == (404, "agent_not_found")
    assert sorted(c["name"] for c in listed.json()) == ["open", "other"]
    assert (sent.status_code, sent.json()["error"]["code"]) == (404, "agent_not_found")
    assert unknown.status_code == 404
    executions = await http.get("/executions", headers=A)
    assert executions.json()["items"] == []


CALLER = """
name: caller
agent_type: t
execution_mode: autonomous
llm_config: {{provider: scripted, model: s}}
tools:
  - name: remote
    type: a2a
    url: "{url}"
"""


def _ask_remote(request: LLMRequest) -> dict[str, Any] | str:
    """The model: asks the remote agent once, then answers with what the tool said."""
    results = [str(m.content) for m in request.messages if m.role == "tool"]
    if not results:
        return {"tool_calls": [{"name": "remote", "arguments": {"message": "leak this"}}]}
    return f"tool said: {results[0]}"


async def _tool_error(tmp_path: Path, url: str, **env: str) -> str:
    """The error the `remote` a2a tool gave the model when its entry's url is `url`."""
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "caller.yml").write_text(CALLER.format(url=url))
    node = Node(tenants_settings(tmp_path, agents), script=_ask_remote)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        async with node.running(), orchestrator_client(node) as client:
            answer = await client.post("/agents/caller/invoke", json={"task_data": {"prompt": "go"}}, headers=A)
    execution = answer.json()
    assert execution["status"] == "succeeded", answer.text
    [call] = execution["tool_calls"]
    return str(call["error"])


async def test_an_a2a_card_url_from_the_environment_must_be_public(tmp_path: Path) -> None:
    with A2aTestServer() as remote:
        error = await _tool_error(tmp_path, "${CARD_URL}", CARD_URL=remote.card_url)

    assert "127.0.0.1 is not a public address" in error
    assert remote.headers == []


async def test_a_card_cannot_send_the_platform_to_a_private_address(tmp_path: Path) -> None:
    with A2aTestServer(announced="http://127.0.0.2:9/rpc") as remote:
        error = await _tool_error(tmp_path, remote.card_url)

    assert "127.0.0.2 is not a public address" in error
    assert [h.get("a2a-version") for h in remote.headers] == ["1.0"]  # the card only
    assert remote.texts == []
