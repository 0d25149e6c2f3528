"""Issue 19, rule 2: the control plane is closed to callers (and rule 6 for chains).

A caller with an ordinary key cannot write the platform's own topics through `POST /events`
(embedded and distributed), nor can an agent through the `publish_event` tool; a process
that writes a forged `execution.finished` straight onto the bus reaches no waiting caller,
no webhook, no Slack answer and no budget, because each reads the stored execution; and a
chain through a collaborative agent keeps its depth and its tenant, the planner's calls and
the steps included."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from agentrunner.adapters.tools.builtin import builtin_tool
from agentrunner.domain.agent import ToolConfig
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.llm import Completion, LLMRequest, ToolCall
from agentrunner.domain.topics import CHAIN_DEPTH_HEADER, RESERVED_TOPIC_ROOTS, TENANT_HEADER
from agentrunner.node import Node
from agentrunner.ports.tools import ToolContext
from agentrunner.runtime.topics import finished_topic
from agentrunner.testing import InMemoryEventBus
from agentrunner.tracing import as_tenant, current_tenant
from tests.e2e.platform import start_platform
from tests.fakes.slack_server import FakeSlack
from tests.integration.conftest import BUSES, node_on
from tests.integration.processes import role_processes
from tests.ports import free_port
from tests.security.conftest import TEAM_A_KEY, TENANTS_ENV

# Every root, bare and under it, in other cases, and the platform's real topics.
RESERVED = sorted(
    {
        *RESERVED_TOPIC_ROOTS,
        *(f"{root}.forged" for root in RESERVED_TOPIC_ROOTS),
        *(root.upper() for root in RESERVED_TOPIC_ROOTS),
        "Invoke.writer",
        "invoke.writer",
        "execution.finished.writer",
        "execution.cancel.writer",
        "execution.progress.writer.e1",
        "agent.output.writer",
        "Agent.Output.writer",
        "config.changed",
        "scheduled.tasks",
        "slack.command.ask",
        "slack.interaction.approve",
        "clarification.answered.run1",
        "clarification.requested.run1",
        "plan.approval.requested.run1",
        "budget.warning.writer",
        "node.n1.config",
        "collaboration.completed.run1",
    }
)
MALFORMED = ["", ".", "invoke.", "orders..created", "orders.#", "orders.*", "orders created", "orders/created"]

WRITER = "name: writer\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: scripted, model: w}\n"


def _headers(url: str) -> dict[str, str]:
    """team-a's key, as the platform names tenants (`team-a:<key>`); before named tenants
    existed, the whole entry was the key."""
    for key in (TEAM_A_KEY, f"team-a:{TEAM_A_KEY}"):
        if httpx.get(f"{url}/executions", headers={"x-api-key": key}, timeout=5).status_code != 401:
            return {"x-api-key": key}
    raise AssertionError("team-a's key is refused")


def _every_reserved_topic_is_refused(url: str) -> None:
    headers = _headers(url)
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        answers = {topic: http.post("/events", json={"topic": topic, "payload": {"x": 1}}) for topic in RESERVED}
        malformed = {topic: http.post("/events", json={"topic": topic}).status_code for topic in MALFORMED}
        own = http.post("/events", json={"topic": "orders.created", "payload": {"id": 1}})
    refused = {topic: (a.status_code, a.json()["error"]["code"]) for topic, a in answers.items()}
    assert refused == dict.fromkeys(RESERVED, (403, "topic_reserved"))
    assert {topic: status for topic, status in malformed.items() if status not in (400, 403, 422)} == {}
    assert own.status_code == 202, own.text


def test_every_reserved_topic_is_refused_by_an_embedded_platform(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "writer.yml").write_text(WRITER)
    platform = start_platform(tmp_path, TENANTS_ENV)
    try:
        _every_reserved_topic_is_refused(platform.url("orchestrator"))
    finally:
        assert platform.stop() == 0


@pytest.fixture
def distributed_orchestrator(tmp_path: Path, postgres_url: str) -> Iterator[str]:
    run_schema_command(postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "writer.yml").write_text(WRITER)
    port = free_port()
    with role_processes(tmp_path, postgres_url, ORCHESTRATOR_PORT=str(port), **TENANTS_ENV) as roles:
        roles.serve("orchestrator", log="orchestrator.log")
        url = f"http://127.0.0.1:{port}"
        roles.wait_ready(url)
        yield url


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_every_reserved_topic_is_refused_by_a_distributed_orchestrator(distributed_orchestrator: str) -> None:
    _every_reserved_topic_is_refused(distributed_orchestrator)


# The publish_event tool: the same list, narrowed by allowed_topics; the chain goes on.


def _publisher(**entry: Any) -> tuple[Any, InMemoryEventBus]:
    bus = InMemoryEventBus()
    tool = builtin_tool(ToolConfig(name="publish_event", **entry), store=None, bus=bus)  # type: ignore[arg-type]
    assert tool is not None
    return tool, bus


CONTEXT = ToolContext(agent="smith", execution_id="e1", session_id=None, trace_id="t1", tenant="team-a", chain_depth=2)


async def test_the_publish_event_tool_refuses_every_reserved_topic() -> None:
    tool, _ = _publisher()
    for topic in RESERVED:
        with pytest.raises(PermissionError, match="reserved for agentrunner"):
            await tool.call({"topic": topic, "payload": {}}, CONTEXT)


async def test_the_publish_event_tool_publishes_only_its_allowed_topics_with_tenant_and_depth() -> None:
    tool, bus = _publisher(allowed_topics=["orders.#"])
    seen: list[Event] = []

    async def keep(event: Event) -> None:
        seen.append(event)

    await bus.start()
    await bus.subscribe("watch", ["#"], keep)
    with pytest.raises(PermissionError, match="allowed_topics"):
        await tool.call({"topic": "report.ready", "payload": {}}, CONTEXT)
    with pytest.raises(PermissionError, match="reserved"):
        await tool.call({"topic": "invoke.writer", "payload": {}}, CONTEXT)
    await tool.call({"topic": "orders.created", "payload": {"id": 7}}, CONTEXT)
    await _until(lambda: _true(seen))

    [event] = seen
    assert event.topic == "orders.created"
    assert event.headers[TENANT_HEADER] == "team-a", "what the event starts counts for the tenant"
    assert event.headers[CHAIN_DEPTH_HEADER] == "3", "one deeper than the execution that published it"
    await bus.close()


async def _true(value: Any) -> Any:
    return value


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = 20) -> Any:
    async def poll() -> Any:
        while not (result := await check()):
            await asyncio.sleep(0.05)
        return result

    return await asyncio.wait_for(poll(), timeout)


# Forged results on the bus: a process with bus access publishes `execution.finished`.


def _forged(execution_id: str, agent: str, **execution: Any) -> Event:
    record = {
        "execution_id": execution_id,
        "agent": agent,
        "status": "succeeded",
        "output": "FORGED",
        "trace_id": "t" * 32,
        **execution,
    }
    payload = {"execution_id": execution_id, "status": "succeeded", "execution": record}
    return Event(topic=finished_topic(agent), payload=payload, trace_id="t" * 32)


@pytest.mark.parametrize("bus", BUSES)
async def test_a_forged_finished_event_on_the_bus_reaches_no_waiting_caller(bus: str, tmp_path: Path) -> None:
    release = asyncio.Event()

    async def slow(request: LLMRequest) -> str:
        await asyncio.wait_for(release.wait(), 30)
        return "the real answer"

    async with node_on(bus, tmp_path, {"writer.yml": WRITER}, script=slow) as node:
        waiting = asyncio.create_task(node.orchestrator.invoke("writer", {"prompt": "hi"}, wait=20))
        running = await _until(lambda: _running(node))
        await node.bus.publish(_forged(running, "writer"))
        await asyncio.sleep(0.5)
        assert not waiting.done(), "the forged event answered the caller"
        release.set()
        answered = await waiting

    assert (answered.status, answered.output) == (ExecutionStatus.SUCCEEDED, "the real answer")


async def _running(node: Node) -> str | None:
    page = await node.store.queries.list_executions(agent="writer", status=ExecutionStatus.RUNNING, limit=5)
    return page.items[0].execution_id if page.items else None


async def test_a_forged_finished_event_makes_no_webhook_call_and_no_slack_post(tmp_path: Path) -> None:
    with FakeSlack(retry_after=0) as slack:
        settings = {"webhook_secret": "w" * 32, "slack_bot_token": "xoxb-test", "slack_api_url": slack.api_url}
        settings |= {"slack_signing_secret": "s" * 32}
        async with node_on("memory", tmp_path, {"writer.yml": WRITER}, script=lambda r: "ok", **settings) as node:
            done = await node.orchestrator.invoke("writer", {"prompt": "hi"}, wait=20)
            assert (done.status, done.webhook_url) == (ExecutionStatus.SUCCEEDED, None)
            origin = {"source": "slack", "channel_id": "C1", "response_url": slack.response_url("forged")}
            await node.bus.publish(
                _forged(done.execution_id, "writer", webhook_url="http://127.0.0.1:9/steal", input=origin)
            )
            await asyncio.sleep(1.5)  # what a consumer would have done by now
            delivery = await node.store.webhook_deliveries.get_webhook_delivery(done.execution_id)

        assert delivery is None, "no webhook is recorded or sent for a URL an event names"
        assert slack.messages() == [], "the bot posts nothing an event asks for"


BUDGETED = WRITER.replace("name: writer", "name: budgeted") + "limits: {budget_usd: 1.0}\n"


async def test_a_forged_finished_event_spends_no_budget(tmp_path: Path) -> None:
    async with node_on("memory", tmp_path, {"budgeted.yml": BUDGETED}, script=lambda r: "ok") as node:
        first = await node.orchestrator.invoke("budgeted", {"prompt": "one"}, wait=20)  # the spend is read here
        assert first.status is ExecutionStatus.SUCCEEDED
        forged = _forged(uuid4().hex, "budgeted", cost_usd=1000.0)
        await node.bus.publish(forged)
        await asyncio.sleep(0.5)
        second = await node.orchestrator.invoke("budgeted", {"prompt": "two"}, wait=20)

    assert second.status is ExecutionStatus.SUCCEEDED, "a claimed cost is not a cost"


# Chains keep their depth and tenant through a collaborative agent (rule 6).

START = "name: start\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: scripted, model: start}\n"
HELPER = (
    "name: helper\nagent_type: t\nexecution_mode: autonomous\ndescription: helps\n"
    "llm_config: {provider: scripted, model: helper}\n"
)
TEAM = (
    "name: team\nagent_type: t\nexecution_mode: collaborative\ndescription: the team\n"
    "llm_config: {provider: scripted, model: coordinator}\n"
    'collaborative_config: {"preferred_collaborators": ["helper"], "max_plan_steps": 2}\n'
    "event_subscriptions: [agent.output.start]\n"
)
AFTER = (
    "name: after\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: scripted, model: after}\n"
    "event_subscriptions: [agent.output.team]\n"
)
PLAN = {"steps": [{"id": "only", "agent": "helper", "instruction": "help"}]}


@pytest.mark.parametrize("bus", BUSES)
async def test_a_chain_through_a_collaborative_agent_keeps_its_depth_and_tenant(bus: str, tmp_path: Path) -> None:
    tenants: dict[str, str | None] = {}

    async def models(request: LLMRequest) -> str | Completion:
        if any(tool.name == "submit_plan" for tool in request.tools):
            tenants["planner"] = current_tenant()
            return Completion(text="", tool_calls=[ToolCall(id="p", name="submit_plan", arguments=PLAN)])
        return f"{request.model} done"

    agents = {"start.yml": START, "helper.yml": HELPER, "team.yml": TEAM, "after.yml": AFTER}
    fast = {"collaborative_poll_seconds": 0.2, "clarification_sweep_seconds": 0.2}
    async with node_on(bus, tmp_path, agents, script=models, **fast) as node:
        with as_tenant("team-a"):
            started = await node.orchestrator.invoke("start", {"prompt": "go"}, wait=20)
        assert started.status is ExecutionStatus.SUCCEEDED
        after = await _until(lambda: _finished(node, "after"), timeout=60)
        team = (await node.store.queries.list_executions(agent="team", limit=5)).items
        steps = (await node.store.queries.list_executions(agent="helper", limit=5)).items

    assert [e.tenant for e in team] == ["team-a"], "the run counts for the tenant"
    assert [e.tenant for e in steps] == ["team-a"], "its steps count for the tenant"
    assert tenants["planner"] == "team-a", "the planner's model call counts for the tenant"
    assert after.tenant == "team-a", "the chain after the run keeps the tenant"
    assert [e.chain_depth for e in team] == [1]
    assert after.chain_depth == 2, "the chain goes on from the run's depth, not from 1 again"


async def _finished(node: Node, agent: str) -> Any:
    page = await node.store.queries.list_executions(agent=agent, limit=5)
    return next((e for e in page.items if e.status.is_terminal), None)


async def test_a_collaborative_run_started_by_an_event_counts_against_the_tenants_budget(tmp_path: Path) -> None:
    planned: list[str | None] = []

    async def models(request: LLMRequest) -> str | Completion:
        if any(tool.name == "submit_plan" for tool in request.tools):
            planned.append(current_tenant())
            return Completion(text="", tool_calls=[ToolCall(id="p", name="submit_plan", arguments=PLAN)])
        return f"{request.model} done"

    team = TEAM.replace("agent.output.start", "orders.big")
    agents = {"helper.yml": HELPER, "team.yml": team}
    async with node_on("memory", tmp_path, agents, script=models, tenant_budget_usd=1.0) as node:
        spent = Execution(
            execution_id=uuid4().hex,
            agent="helper",
            status=ExecutionStatus.SUCCEEDED,
            cost_usd=5.0,
            tenant="team-a",
            trace_id="t" * 32,
        )
        await node.store.executions.create_execution(spent)
        with as_tenant("team-a"):
            await node.orchestrator.publish_event("orders.big", {"prompt": "plan it"})
        run = await _until(lambda: _finished(node, "team"), timeout=30)

    assert run.tenant == "team-a"
    assert run.status is ExecutionStatus.FAILED
    assert run.error is not None
    assert run.error.code == "budget_exceeded", "team-a spent its budget: its run does not plan"
    assert planned == [], "no planner call on a spent budget"
