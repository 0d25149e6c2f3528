"""A whole node on each event bus (in memory, RabbitMQ): invocations run through it, and an
event that fails every attempt is kept as a dead letter, listed and replayed over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from agentrunner.adapters.bus.rabbitmq import RabbitMQEventBus
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.node import Node
from agentrunner.settings import Settings
from tests.contract.conftest import RABBITMQ_URL, delete_broker_objects

AGENT = "name: echoer\nagent_type: demo\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Node]:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "echoer.yml").write_text(AGENT)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        agents_dir=tmp_path / "agents",
        data_dir=tmp_path,
        rabbitmq_url=RABBITMQ_URL if request.param == "rabbitmq" else "",
        rabbitmq_exchange_prefix=f"test-{uuid4().hex[:12]}",
        bus_retry_delays=(0.05, 0.05),
    )
    running = Node(settings)
    async with running.running():
        yield running
    if isinstance(running.bus, RabbitMQEventBus):
        await delete_broker_objects(running.bus)


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
        await node.store.create_execution(
            Execution(execution_id="early", agent="echoer", input={"prompt": "late record"}, trace_id="trace-dead")
        )
        replayed = await http.post(f"/dead-letters/{letter['id']}/replay")

        async def finished() -> Execution:
            while not (execution := await node.store.get_execution("early")).status.is_terminal:
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
