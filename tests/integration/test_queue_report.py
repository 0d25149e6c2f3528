"""`GET /queues` and the queue gauges of `/metrics` (issue 26, item 4), embedded (in-memory
bus, SQLite) and distributed (RabbitMQ, PostgreSQL): per pool and agent, the messages ready
in the agent's queue, the executions workers hold and the oldest wait, the same on both;
a collaborative run paused for its plan's approval is not backlog; all of it drains to
zero once the work is done."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentrunner.domain.llm import Completion, LLMRequest, ToolCall
from agentrunner.node import Node
from tests.integration.conftest import node_on

BUSY = "name: busy\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: scripted, model: busy}\n"
CHAT = "name: chat\nagent_type: t\nexecution_mode: continuous\nllm_config: {provider: scripted, model: chat}\n"
LEAD = (
    "name: lead\nagent_type: t\nexecution_mode: collaborative\nllm_config: {provider: scripted, model: lead}\n"
    "collaborative_config: {preferred_collaborators: [busy], max_plan_steps: 1, require_plan_approval: true}\n"
)
AGENTS = {"busy.yml": BUSY, "chat.yml": CHAT, "lead.yml": LEAD}
PLAN = {"steps": [{"id": "one", "agent": "busy", "instruction": "quick"}]}


class Models:
    """The scripted models: `busy` holds a "hold" prompt until released; the lead plans."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, request: LLMRequest) -> str | Completion:
        if any(tool.name == "submit_plan" for tool in request.tools):
            return Completion(text="", tool_calls=[ToolCall(id="plan", name="submit_plan", arguments=PLAN)])
        if request.messages[-1].content == "hold":
            await self.release.wait()
        return "done"


@pytest.fixture(
    params=[
        pytest.param(("memory", None), id="embedded"),
        pytest.param(("rabbitmq", "postgres"), id="distributed", marks=[pytest.mark.rabbitmq, pytest.mark.postgres]),
    ]
)
def platform(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The bus and the database URL (None: SQLite) of this run (sync: see `state_store_url`)."""
    bus, database = request.param
    return bus, request.getfixturevalue(f"{database}_url") if database else None


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    async def poll() -> Any:
        while not (result := await check()):
            await asyncio.sleep(0.05)
        return result

    return await asyncio.wait_for(poll(), timeout)


def _agents(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {agent["agent"]: {**agent, "pool": pool["pool"]} for pool in report["pools"] for agent in pool["agents"]}


def _gauges(text: str) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels["agent"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("agentrunner_queue_") and "agent" in sample.labels
    }


async def test_the_queues_show_waiting_and_held_work_and_not_a_paused_run(
    tmp_path: Path, platform: tuple[str, str | None]
) -> None:
    bus, database_url = platform
    models = Models()
    settings: dict[str, Any] = {"rabbitmq_prefetch_count": 1, "collaborative_poll_seconds": 0.2}
    if database_url:
        settings["database_url"] = database_url
    async with node_on(bus, tmp_path, AGENTS, script=models, **settings) as node:
        app = node.apps()["orchestrator"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as http:

            async def report() -> dict[str, Any]:
                answer = await http.get("/queues")
                assert answer.status_code == 200, answer.text
                return dict(orjson.loads(answer.content))

            lead = await node.orchestrator.invoke("lead", {"prompt": "plan it"}, wait=0)
            held = await node.orchestrator.invoke("busy", {"prompt": "hold"}, wait=0)
            # One message at a time per worker (prefetch 1): while "hold" runs, two wait.
            await _until(lambda: _started(node, held.execution_id))
            for number in range(2):
                await node.orchestrator.invoke("busy", {"prompt": f"quick {number}"}, wait=0)
            await _until(lambda: _plan_waits(http, lead.execution_id))

            async def busy_backlog() -> dict[str, Any] | None:
                agents = _agents(await report())
                return agents if agents["busy"]["ready"] == 2 else None

            during = await _until(busy_backlog)
            pools = {pool["pool"]: pool for pool in (await report())["pools"]}
            scraped = _gauges((await http.get("/metrics")).text)
            models.release.set()

            async def drained() -> dict[str, Any] | None:
                agents = _agents(await report())
                busy = agents["busy"]
                return agents if (busy["ready"], busy["unacknowledged"]) == (0, 0) else None

            after = await _until(drained)

    busy, chat, paused = during["busy"], during["chat"], during["lead"]
    assert (busy["pool"], busy["queue"], busy["unacknowledged"]) == ("autonomous", "agent.busy", 1)
    assert busy["oldest_queued_age_seconds"] > 0
    assert (chat["pool"], chat["ready"], chat["unacknowledged"], chat["oldest_queued_age_seconds"]) == (
        "continuous",
        0,
        0,
        None,
    )
    assert (paused["pool"], paused["ready"], paused["unacknowledged"], paused["oldest_queued_age_seconds"]) == (
        "collaborative",
        0,
        0,
        None,
    ), "a run waiting for its plan's approval holds no worker and waits for none"
    assert list(pools) == ["autonomous", "continuous", "collaborative"]
    assert (pools["autonomous"]["ready"], pools["autonomous"]["unacknowledged"]) == (2, 1)
    assert scraped[("agentrunner_queue_ready", "busy")] == 2
    assert scraped[("agentrunner_queue_unacknowledged", "busy")] == 1
    assert scraped[("agentrunner_queue_oldest_queued_age_seconds", "busy")] > 0
    assert scraped[("agentrunner_queue_ready", "lead")] == 0
    assert after["busy"]["oldest_queued_age_seconds"] is None


async def _started(node: Node, execution_id: str) -> bool:
    return (await node.store.executions.get_execution(execution_id)).status.value == "running"


async def _plan_waits(http: httpx.AsyncClient, run_id: str) -> bool:
    answer = await http.get(f"/plan-runs/{run_id}")
    return answer.status_code == 200 and answer.json()["status"] == "awaiting_approval"


async def test_the_report_answers_503_when_the_bus_cannot_count(tmp_path: Path) -> None:
    async with node_on("memory", tmp_path, {"busy.yml": BUSY}, script=Models()) as node:
        app = node.apps()["orchestrator"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as http:
            await node.bus.close()  # what a broker gone away looks like to the report
            answer = await http.get("/queues")

    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "dependency_unavailable"
