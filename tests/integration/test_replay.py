"""Replaying an execution from a given step (issue 22, item 7: time travel for debugging):
`POST /executions/{id}/replay {"from_step": N}` starts a new execution of the same agent on
the same input that takes the first N steps from the source's journal (the vendor fake and
a real MCP server that counts its calls see no call for them) and runs the rest; the new
execution names its source. Another tenant's execution, a step past the journal's end, a
body that is not a step, an execution still running: refused, nothing started. The state
role lists the steps too."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.node import Node
from agentrunner.settings import Role
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import node_on
from tests.integration.test_durable_agents import (
    FINAL,
    TOOLS,
    CountingTools,
    _agent,
    _finished,
    _orchestrator,
    _scripted_loop,
    _vendor,
    _wait_for,
)

ALICE_KEY = "key-alice-0123456789abcdef0123456789"
MALLORY_KEY = "key-mallory-0123456789abcdef01234567"
STEPS = 2 * TOOLS + 1  # a model call, then one tool call per answer, then the final answer


def _client(node: Node, role: Role, key: str | None = None) -> httpx.AsyncClient:
    headers = {"X-API-Key": key} if key else {}
    app = node.apps()[role]
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=f"http://{role}", timeout=30, headers=headers
    )


@pytest.fixture(params=["embedded", pytest.param("distributed", marks=[pytest.mark.postgres, pytest.mark.rabbitmq])])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Where the node keeps its state and passes its messages: SQLite and the in-memory
    bus, or PostgreSQL and RabbitMQ."""
    if request.param == "embedded":
        return {"bus": "memory"}
    return {"bus": "rabbitmq", "database_url": request.getfixturevalue("postgres_url")}


async def test_a_replay_reuses_the_steps_before_n_and_runs_the_rest(tmp_path: Path, backend: dict[str, Any]) -> None:
    bus = backend.pop("bus")
    with CountingTools() as tools, FakeOpenAI(script=_vendor) as fake:
        async with (
            node_on(
                bus,
                tmp_path,
                {"journaled.yml": _agent(tools.url)},
                openai_api_key=fake.api_key,
                openai_base_url=fake.base_url,
                **backend,
            ) as node,
            _orchestrator(node) as http,
        ):
            answer = await http.post("/agents/journaled/invoke", json={"task_data": {"prompt": "go"}, "wait": 30})
            source_id = answer.json()["execution_id"]
            source = await _finished(http, source_id)
            calls = (dict(tools.calls), len(fake.requests))

            # Steps 1-4 (answer 1, tool 1, answer 2, tool 2) reused; from answer 3 on, run.
            replay = await http.post(f"/executions/{source_id}/replay", json={"from_step": 4, "wait": 30})
            replayed = await _finished(http, replay.json()["execution_id"])
            after_replay = (dict(tools.calls), len(fake.requests))

            # Every step reused: nothing is called at all, the answer is the same.
            whole = await http.post(f"/executions/{source_id}/replay", json={"from_step": STEPS, "wait": 30})
            everything = await _finished(http, whole.json()["execution_id"])
            source_after = (await http.get(f"/executions/{source_id}")).json()

    assert source["status"] == "succeeded", source
    assert calls == ({1: 1, 2: 1, 3: 1, 4: 1}, TOOLS + 1)
    assert replay.status_code == 200, replay.text
    assert replay.json()["replay_of"] == {"execution_id": source_id, "from_step": 4}
    assert replayed["execution_id"] != source_id
    assert replayed["replay_of"] == {"execution_id": source_id, "from_step": 4}
    assert (replayed["status"], replayed["output"], replayed["agent"]) == ("succeeded", FINAL, "journaled")
    assert replayed["input"] == source["input"]
    # Tools 1 and 2 and the first two answers came from the source's journal; tools 3 and 4
    # and the last three answers were called again.
    assert after_replay == ({1: 1, 2: 1, 3: 2, 4: 2}, TOOLS + 1 + 3)
    assert [(s["seq"], s["kind"], s["replayed"]) for s in replayed["steps"]] == [
        (seq, "model" if seq % 2 else "tool", seq <= 4) for seq in range(1, STEPS + 1)
    ]
    models = [s for s in replayed["steps"] if s["kind"] == "model"]
    assert replayed["saved_cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in models[:2]))
    assert [c["result"] for c in replayed["tool_calls"]] == ["step 1", "step 2", "step 3", "step 4"]

    assert (whole.status_code, everything["status"], everything["output"]) == (200, "succeeded", FINAL)
    assert (dict(tools.calls), len(fake.requests)) == after_replay, "a replay of every step calls nothing"
    assert all(s["replayed"] for s in everything["steps"])
    assert len(everything["steps"]) == STEPS
    # The source is left as it was: its journal is read, never written.
    assert source_after["replay_of"] is None
    assert not any(s["replayed"] for s in source_after["steps"])
    assert source_after["steps"] == source["steps"]


@asynccontextmanager
async def _two_tenants(tmp_path: Path, tools: CountingTools, **settings: Any) -> AsyncIterator[Node]:
    agents = {
        "journaled.yml": _agent(tools.url, provider="scripted", model="s"),
        "chat.yml": _agent(tools.url, provider="scripted", model="s", mode="continuous").replace(
            "name: journaled", "name: chat"
        ),
    }
    async with node_on(
        "memory",
        tmp_path,
        agents,
        script=_scripted_loop,
        enable_api_auth=True,
        api_keys=f"alice:{ALICE_KEY},mallory:{MALLORY_KEY}",
        **settings,
    ) as node:
        yield node


def _without_ids(answer: httpx.Response, *ids: str) -> dict[str, Any]:
    body: dict[str, Any] = answer.json()
    error = dict(body["error"], trace_id=None)
    for execution_id in ids:
        error["message"] = error["message"].replace(execution_id, "<id>")
    return {"status": answer.status_code, "error": error}


async def test_a_replay_of_another_tenants_execution_or_from_a_step_it_does_not_have_starts_nothing(
    tmp_path: Path,
) -> None:
    with CountingTools() as tools:
        async with (
            _two_tenants(tmp_path, tools, max_request_bytes=4096) as node,
            _client(node, "orchestrator", ALICE_KEY) as alice,
            _client(node, "orchestrator", MALLORY_KEY) as mallory,
        ):
            answer = await alice.post("/agents/journaled/invoke", json={"task_data": {"prompt": "go"}, "wait": 30})
            source_id = answer.json()["execution_id"]
            calls = dict(tools.calls)

            stolen = await mallory.post(f"/executions/{source_id}/replay", json={"from_step": 2})
            unknown = await mallory.post("/executions/no-such-execution/replay", json={"from_step": 2})
            refused = {
                repr(body): await alice.post(f"/executions/{source_id}/replay", json=body)
                for body in (
                    {"from_step": -1},
                    {"from_step": STEPS + 1},
                    {"from_step": 10**30},
                    {"from_step": "3"},
                    {"from_step": 1.5},
                    {"from_step": True},
                    {"from_step": None},
                    {},
                    {"from_step": 1, "wait": -1},
                )
            }
            oversized = await alice.post(
                f"/executions/{source_id}/replay", json={"from_step": 1, "padding": "x" * 8192}
            )
            mine = (await alice.get("/executions")).json()["items"]
            theirs = (await mallory.get("/executions")).json()["items"]

    assert (stolen.status_code, unknown.status_code) == (404, 404)
    assert _without_ids(stolen, source_id) == _without_ids(unknown, "no-such-execution")
    assert "step" not in stolen.text.replace("steps", "")  # nothing of the journal told
    for body, refusal in refused.items():
        assert refusal.status_code == 422, (body, refusal.text)
    past_the_end = refused[repr({"from_step": STEPS + 1})].json()["error"]
    assert past_the_end["code"] == "step_out_of_range"
    assert f"it has {STEPS} steps" in past_the_end["message"]
    assert oversized.status_code == 413, oversized.text
    # Nothing was started: one execution (the source), no tool called again.
    assert [execution["execution_id"] for execution in mine] == [source_id]
    assert theirs == []
    assert dict(tools.calls) == calls


async def test_a_running_execution_or_a_conversations_turn_is_not_replayed(tmp_path: Path) -> None:
    with CountingTools(hold=2) as tools:
        async with (
            _two_tenants(tmp_path, tools) as node,
            _client(node, "orchestrator", ALICE_KEY) as alice,
        ):
            running = await alice.post("/agents/journaled/invoke", json={"task_data": {"prompt": "go"}, "wait": 0})
            running_id = running.json()["execution_id"]
            await _wait_for(lambda: tools.calls[2] == 1, "tool call 2 never came")
            too_early = await alice.post(f"/executions/{running_id}/replay", json={"from_step": 0})
            tools.release()
            await _finished(alice, running_id)

            turn = await alice.post(
                "/agents/chat/invoke", json={"task_data": {"prompt": "hi"}, "session_id": "s-1", "wait": 30}
            )
            chat = await alice.post(f"/executions/{turn.json()['execution_id']}/replay", json={"from_step": 1})
            listed = (await alice.get("/executions")).json()["items"]

    assert too_early.status_code == 409, too_early.text
    assert too_early.json()["error"]["code"] == "conflict"
    assert chat.status_code == 400, chat.text
    assert "continuous" in chat.json()["error"]["message"]
    assert len(listed) == 2  # the two sources, no replay of either


async def test_a_replay_retried_with_its_idempotency_key_starts_one_execution(tmp_path: Path) -> None:
    with CountingTools() as tools:
        async with (
            _two_tenants(tmp_path, tools) as node,
            _client(node, "orchestrator", ALICE_KEY) as alice,
        ):
            answer = await alice.post("/agents/journaled/invoke", json={"task_data": {"prompt": "go"}, "wait": 30})
            source_id = answer.json()["execution_id"]
            key = {"Idempotency-Key": "replay-once"}
            first = await alice.post(f"/executions/{source_id}/replay", json={"from_step": 2, "wait": 30}, headers=key)
            again = await alice.post(f"/executions/{source_id}/replay", json={"from_step": 2, "wait": 30}, headers=key)
            other = await alice.post(f"/executions/{source_id}/replay", json={"from_step": 3, "wait": 30}, headers=key)
            listed = (await alice.get("/executions")).json()["items"]

    assert first.status_code == 200, first.text
    assert again.json()["execution_id"] == first.json()["execution_id"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert other.status_code == 409  # the same key for another replay
    assert len(listed) == 2
    assert dict(tools.calls) == {1: 1, 2: 2, 3: 2, 4: 2}  # one replay ran: answer 1 and tool 1 reused


async def test_the_state_role_lists_the_steps_to_their_tenant_only(tmp_path: Path) -> None:
    with CountingTools() as tools:
        async with (
            _two_tenants(tmp_path, tools) as node,
            _client(node, "orchestrator", ALICE_KEY) as alice,
            _client(node, "state", ALICE_KEY) as alice_state,
            _client(node, "state", MALLORY_KEY) as mallory_state,
        ):
            answer = await alice.post("/agents/journaled/invoke", json={"task_data": {"prompt": "go"}, "wait": 30})
            source_id = answer.json()["execution_id"]
            replay = await alice.post(f"/executions/{source_id}/replay", json={"from_step": 2, "wait": 30})
            replay_id = replay.json()["execution_id"]
            orchestrators = (await alice.get(f"/executions/{replay_id}")).json()
            states = await alice_state.get(f"/executions/{replay_id}")
            stolen = await mallory_state.get(f"/executions/{replay_id}")

    assert states.status_code == 200, states.text
    record = states.json()
    assert len(record["steps"]) == STEPS
    assert record["steps"] == orchestrators["steps"]
    assert [s["replayed"] for s in record["steps"]] == [True, True] + [False] * (STEPS - 2)
    assert record["saved_cost_usd"] == orchestrators["saved_cost_usd"]
    assert record["replay_of"] == {"execution_id": source_id, "from_step": 2}
    assert stolen.status_code == 404
    assert not re.search(r"kit__step|step \d", stolen.text)
