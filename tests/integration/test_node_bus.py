"""A whole node on each event bus (in memory, RabbitMQ): invocations run through it, and an
event that fails every attempt is kept as a dead letter, listed and replayed over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.node import Node
from tests.integration.conftest import BUSES, node_on

AGENTS = {
    "echoer": [],
    "greeter": ["customer.ticket.created"],
    "summariser": ["agent.output.greeter"],
    "looper": ["loop.start", "agent.output.looper"],
}
MAX_DEPTH = 2


def _agent_yaml(name: str, subscriptions: list[str]) -> str:
    return (
        f"name: {name}\nagent_type: demo\nexecution_mode: autonomous\n"
        f"llm_config: {{provider: echo, model: echo}}\nevent_subscriptions: {subscriptions!r}\n"
    )


@pytest.fixture(params=BUSES)
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Node]:
    files = {f"{name}.yml": _agent_yaml(name, subscriptions) for name, subscriptions in AGENTS.items()}
    async with node_on(
        request.param, tmp_path, files, bus_retry_delays=(0.05, 0.05), chain_max_depth=MAX_DEPTH
    ) as node:
        yield node


def client(node: Node) -> httpx.AsyncClient:
    app = node.apps()["orchestrator"]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://orchestrator")


async def test_an_invocation_runs_through_the_bus(node: Node) -> None:
    async with client(node) as http:
        response = await http.post("/agents/echoer/invoke", json={"task_data": {"prompt": "over the bus"}})
        ready = await http.get("/health/ready")

    assert response.status_code == 200
    assert response.json()["output"] == "over the bus"
    assert ready.json()["checks"]["event_bus"] == "ok"


async def test_a_dead_letter_is_listed_and_replayed_over_http(node: Node) -> None:
    # An invocation event that arrived before its execution record: every attempt fails.
    await node.bus.publish(Event(topic="invoke.echoer", payload={"execution_id": "early"}, trace_id="trace-dead"))

    async with client(node) as http:

        async def listed() -> list[dict[str, object]]:
            while not (letters := (await http.get("/dead-letters")).json()):
                await asyncio.sleep(0.05)
            return list(letters)

        [letter] = await asyncio.wait_for(listed(), 15)
        await node.store.executions.create_execution(
            Execution(execution_id="early", agent="echoer", input={"prompt": "late record"}, trace_id="trace-dead")
        )
        replayed = await http.post(f"/dead-letters/{letter['id']}/replay")

        async def finished() -> Execution:
            while not (execution := await node.store.executions.get_execution("early")).status.is_terminal:
                await asyncio.sleep(0.05)
            return execution

        execution = await asyncio.wait_for(finished(), 15)
        remaining = (await http.get("/dead-letters")).json()
        missing = await http.post("/dead-letters/nope/replay")

    assert letter["queue"] == "agent.echoer"
    assert letter["topic"] == "invoke.echoer"
    assert letter["attempts"] == 3
    assert "early not found" in str(letter["error"])
    assert replayed.status_code == 200
    assert replayed.json()["replayed_at"] is not None
    assert execution.status is ExecutionStatus.SUCCEEDED
    assert execution.output == "late record"
    assert remaining == []
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "dead_letter_not_found"


async def _executions_of(node: Node, agent: str, count: int) -> list[Execution]:
    async def enough() -> list[Execution]:
        while True:
            page = await node.store.queries.list_executions(agent=agent, limit=50)
            done = [e for e in page.items if e.status.is_terminal]
            if len(done) >= count:
                return done
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(enough(), 15)


async def test_an_external_event_runs_its_subscriber_and_the_output_chains_to_the_next(node: Node) -> None:
    async with client(node) as http:
        published = await http.post(
            "/events",
            json={"topic": "customer.ticket.created", "payload": {"prompt": "printer on fire"}},
            headers={"X-Trace-Id": "trace-chain"},
        )
        [greeted] = await _executions_of(node, "greeter", 1)
        [summarised] = await _executions_of(node, "summariser", 1)

    assert published.status_code == 202
    assert published.json()["trace_id"] == "trace-chain"
    assert (greeted.output, greeted.trace_id) == ("printer on fire", "trace-chain")
    assert summarised.input["execution_id"] == greeted.execution_id
    assert (summarised.output, summarised.trace_id) == ("printer on fire", "trace-chain")


async def test_a_loop_of_outputs_stops_at_the_chain_depth_limit(node: Node) -> None:
    async with client(node) as http:
        await http.post("/events", json={"topic": "loop.start", "payload": {"prompt": "again"}})
        runs = await _executions_of(node, "looper", MAX_DEPTH + 1)
        await asyncio.sleep(0.5)  # room for a run too many
        after = (await node.store.queries.list_executions(agent="looper")).items

    assert len(runs) == MAX_DEPTH + 1
    assert len(after) == MAX_DEPTH + 1


async def test_an_invalid_topic_is_a_400(node: Node) -> None:
    async with client(node) as http:
        response = await http.post("/events", json={"topic": "not a topic", "payload": {}})

    assert response.status_code == 400
    assert "not a topic" in response.json()["error"]["message"]
