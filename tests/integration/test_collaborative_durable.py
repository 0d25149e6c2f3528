"""Durable agents in a collaborative run (issue 22): a plan step whose agent calls four tools
in sequence against a real MCP server that counts its calls, its node killed (-9) during
tool call 3, resumes from the step's journal (tools 1 and 2 and the model's answers before
them are not called again); a step whose tool call needs approval leaves its plan run
waiting, holding nothing and showing which call waits, until the step's execution is
approved; another tenant sees neither."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from agentrunner.domain.llm import Completion, LLMRequest, ToolCall
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import node_on
from tests.integration.processes import RoleProcesses, role_processes
from tests.integration.test_durable_agents import (
    FINAL,
    TOOLS,
    CountingTools,
    _agent,
    _orchestrator,
    _vendor,
    _wait_for,
    embedded_process,
    embedded_ready,
)
from tests.integration.test_tool_gates import _gated, _journaled
from tests.ports import free_port

PLAN = {"steps": [{"id": "work", "agent": "journaled", "instruction": "do the four steps"}]}
SYNTHESIS = "the team is done"


def _team(provider: str, model: str) -> str:
    """A collaborative agent whose plan is one step of the `journaled` agent (or `gated`)."""
    settings = {"preferred_collaborators": ["journaled", "gated"], "max_plan_steps": 2}
    return (
        "name: team\nagent_type: t\nexecution_mode: collaborative\ndescription: the team\n"
        f"llm_config: {{provider: {provider}, model: {model}, max_attempts: 1}}\n"
        f"collaborative_config: {orjson.dumps(settings).decode()}\n"
    )


def _wire(body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    """The OpenAI wire fake: the coordinator (gpt-4o-mini) plans the one step, then
    synthesises; the step's agent (gpt-4o) is the durable tests' loop of four tool calls."""
    if body["model"] != "gpt-4o-mini":
        return _vendor(body)
    if any(tool["function"]["name"] == "submit_plan" for tool in body.get("tools", [])):
        return "", ("submit_plan", PLAN)
    return SYNTHESIS, None


async def _ended(http: httpx.AsyncClient, execution_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        record: dict[str, Any] = (await http.get(f"/executions/{execution_id}")).json()
        if record.get("status") in ("succeeded", "failed", "cancelled", "timed_out"):
            return record
        assert asyncio.get_running_loop().time() < deadline, record
        await asyncio.sleep(0.05)


async def _killed_during_step_call_3(
    tmp_path: Path, agents: dict[str, str], tools: CountingTools, fake: FakeOpenAI
) -> dict[str, Any]:
    """Run the team in an embedded `agentrunner up` killed (-9) during its step's tool call
    3; the plan run as it stood then (its step running)."""
    (tmp_path / "agents").mkdir()
    for name, text in agents.items():
        (tmp_path / "agents" / name).write_text(text)
    port = free_port()
    process = embedded_process(tmp_path, fake, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            await embedded_ready(http, process, tmp_path)
            answer = await http.post("/agents/team/invoke", json={"task_data": {"prompt": "go"}, "wait": 0})
            run_id = answer.json()["execution_id"]
            # Step 3 was called: tools 1 and 2 ended and were recorded before it.
            await _wait_for(lambda: tools.calls[3] == 1, "tool call 3 never came")
            during: dict[str, Any] = (await http.get(f"/plan-runs/{run_id}")).json()
            return during
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        tools.release()  # the held call ends in a server whose client is gone


def _restarted(tmp_path: Path, agents: dict[str, str], fake: FakeOpenAI) -> Any:
    keys = {"openai_api_key": fake.api_key, "openai_base_url": fake.base_url}
    return node_on("memory", tmp_path, agents, **keys, collaborative_poll_seconds=0.2)


async def test_a_plan_step_killed_after_two_tool_calls_resumes_from_its_journal(tmp_path: Path) -> None:
    with CountingTools(hold=3) as tools, FakeOpenAI(script=_wire) as fake:
        agents = {"team.yml": _team("openai", "gpt-4o-mini"), "journaled.yml": _agent(tools.url)}
        during = await _killed_during_step_call_3(tmp_path, agents, tools, fake)
        run_id = during["id"]
        step_calls_before = sum(r.model == "gpt-4o" for r in fake.received)
        async with _restarted(tmp_path, agents, fake) as node, _orchestrator(node) as http:
            run_execution = await _ended(http, run_id)
            run = (await http.get(f"/plan-runs/{run_id}")).json()
            [step] = run["steps"]
            step_execution = (await http.get(f"/executions/{step['execution_id']}")).json()

    assert [(s["step_id"], s["status"]) for s in during["steps"]] == [("work", "running")]
    assert run_execution["status"] == "succeeded", run_execution
    assert (run["status"], run["result"]) == ("succeeded", SYNTHESIS)
    assert (step["status"], step["output"], step["attempts"]) == ("succeeded", FINAL, 1)
    assert step["execution_id"] == during["steps"][0]["execution_id"]  # the same execution, re-sent
    # Tools 1, 2 and the model's first three answers came from the step's journal; call 3
    # had no recorded outcome (the kill came during it, and it is safe to repeat): run again.
    assert dict(tools.calls) == {1: 1, 2: 1, 3: 2, 4: 1}
    assert (step_calls_before, sum(r.model == "gpt-4o" for r in fake.received)) == (3, TOOLS + 1)
    assert [(s["kind"], s["replayed"]) for s in step_execution["steps"]] == [
        *[("model", True), ("tool", True)] * 2,
        ("model", True),
        ("tool", False),
        ("model", False),
        ("tool", False),
        ("model", False),
    ]
    assert step_execution["output"] == FINAL
    # Planned once before the kill (the run was saved with its plan), synthesised once after.
    coordinator = [r for r in fake.received if r.model == "gpt-4o-mini"]
    assert ["submit_plan" in r.tool_names for r in coordinator] == [True, False]


async def test_a_plan_step_killed_inside_a_call_not_safe_to_repeat_waits_and_runs_on_as_answered(
    tmp_path: Path,
) -> None:
    with CountingTools(hold=3) as tools, FakeOpenAI(script=_wire) as fake:
        agents = {"team.yml": _team("openai", "gpt-4o-mini"), "journaled.yml": _journaled(tools.url)}
        during = await _killed_during_step_call_3(tmp_path, agents, tools, fake)
        run_id = during["id"]
        async with _restarted(tmp_path, agents, fake) as node, _orchestrator(node) as http:
            waiting = await _plan_run(http, run_id, "waiting_approval", "succeeded", "failed")
            step_calls_waiting = sum(r.model == "gpt-4o" for r in fake.received)
            [step] = waiting["waiting_steps"]
            body = {"happened": True, "result": "step 3 (done, said a human)"}
            answered = await http.post(f"/executions/{step['execution_id']}/tool-outcome", json=body)
            finished = await _plan_run(http, run_id, "succeeded", "failed")

    assert waiting["status"] == "waiting_approval", waiting
    pending = step["pending_tool_call"]
    assert (pending["reason"], pending["tool"], pending["arguments"]) == ("tool_outcome_unknown", "kit__step", {"n": 3})
    assert step_calls_waiting == 3  # nothing asked again while it waited
    assert answered.status_code == 202
    assert finished["status"] == "succeeded", finished
    # Never run twice: the human said call 3 happened, and the model read what they said.
    assert dict(tools.calls) == {1: 1, 2: 1, 3: 1, 4: 1}
    assert finished["steps"][0]["output"] == "done: step 1, step 2, step 3 (done, said a human), step 4"


@dataclass
class Distributed:
    """An orchestrator, a collaborative pool and an autonomous worker as processes on
    PostgreSQL and RabbitMQ, the step's tools and its model."""

    roles: RoleProcesses
    orchestrator: str
    worker: subprocess.Popen[bytes]
    fake: FakeOpenAI
    tools: CountingTools


@pytest.fixture
def distributed(tmp_path: Path, postgres_url: str) -> Iterator[Distributed]:
    run_schema_command(postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    with CountingTools(hold=3) as tools, FakeOpenAI(script=_wire) as fake:
        (tmp_path / "agents" / "team.yml").write_text(_team("openai", "gpt-4o-mini"))
        (tmp_path / "agents" / "journaled.yml").write_text(_agent(tools.url))
        port, health = free_port(), free_port()
        orchestrator = f"http://127.0.0.1:{port}"
        env = {
            "ORCHESTRATOR_PORT": str(port),
            "OPENAI_API_KEY": fake.api_key,
            "OPENAI_BASE_URL": fake.base_url,
            "COLLABORATIVE_POLL_SECONDS": "0.2",
        }
        with role_processes(tmp_path, postgres_url, **env) as roles:
            roles.serve("orchestrator", log="o.log")
            roles.serve("collaborative", "--health-port", str(health), log="c.log")
            [worker] = roles.serve_workers(1, ready=(orchestrator, f"http://127.0.0.1:{health}"))
            yield Distributed(roles, orchestrator, worker, fake, tools)


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_a_plan_steps_worker_killed_9_after_two_tool_calls_resumes_on_another(distributed: Distributed) -> None:
    tools, fake = distributed.tools, distributed.fake
    async with httpx.AsyncClient(base_url=distributed.orchestrator, timeout=10) as http:
        answer = await http.post("/agents/team/invoke", json={"task_data": {"prompt": "go"}, "wait": 0})
        run_id = answer.json()["execution_id"]
        await _wait_for(lambda: tools.calls[3] == 1, "tool call 3 never came")
        distributed.worker.send_signal(signal.SIGKILL)
        assert distributed.worker.wait(10) == -signal.SIGKILL
        step_calls_before = sum(r.model == "gpt-4o" for r in fake.received)
        tools.release()
        # RabbitMQ hands the step's unacknowledged invocation to the next worker; the plan
        # run's driver (in the collaborative pool) waits on the same execution meanwhile.
        await asyncio.to_thread(distributed.roles.serve_workers, 1)
        run_execution = await _ended(http, run_id)
        run = (await http.get(f"/plan-runs/{run_id}")).json()
        step_execution = (await http.get(f"/executions/{run['steps'][0]['execution_id']}")).json()

    assert run_execution["status"] == "succeeded", run_execution
    assert (run["status"], run["result"], run["steps"][0]["output"]) == ("succeeded", SYNTHESIS, FINAL)
    assert dict(tools.calls) == {1: 1, 2: 1, 3: 2, 4: 1}
    assert (step_calls_before, sum(r.model == "gpt-4o" for r in fake.received)) == (3, TOOLS + 1)
    assert [s["replayed"] for s in step_execution["steps"]] == [True] * 5 + [False] * 4


GATED_PLAN = {"steps": [{"id": "gate", "agent": "gated", "instruction": "call the tool"}]}
ALICE_KEY = "key-alice-0123456789abcdef0123456789"
MALLORY_KEY = "key-mallory-0123456789abcdef01234567"


def _scripted(request: LLMRequest) -> Any:
    """The scripted models: the coordinator plans the `gated` step, then synthesises; the
    step's agent asks `kit__step(1)` (whose entry needs approval), then says what it got."""
    if any(tool.name == "submit_plan" for tool in request.tools):
        return Completion(text="", tool_calls=[ToolCall(id="p", name="submit_plan", arguments=GATED_PLAN)])
    if request.model == "coordinator":
        return SYNTHESIS
    results = [m.content for m in request.messages if m.role == "tool"]
    if not results:
        return {"tool_calls": [{"id": "c1", "name": "kit__step", "arguments": {"n": 1}}]}
    return "done: " + ", ".join(results)


async def _plan_run(http: httpx.AsyncClient, run_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer = await http.get(f"/plan-runs/{run_id}")
        run: dict[str, Any] = answer.json()
        if answer.status_code == 200 and run["status"] in statuses:
            return run
        assert asyncio.get_running_loop().time() < deadline, run
        await asyncio.sleep(0.05)


async def _started_until_waiting(http: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    """Start the team's run; its id and the run once it waits (or ended otherwise)."""
    answer = await http.post("/agents/team/invoke", json={"task_data": {"prompt": "go"}, "wait": 0})
    run_id = str(answer.json()["execution_id"])
    return run_id, await _plan_run(http, run_id, "waiting_approval", "succeeded", "failed")


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=[pytest.mark.postgres, pytest.mark.rabbitmq])])
def deployment(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """(bus, node settings): quick polls and sweeps; on RabbitMQ, the state in PostgreSQL.
    Sync so it can pull in the async `postgres_url`."""
    bus: str = request.param
    settings: dict[str, Any] = {
        "script": _scripted,
        "collaborative_poll_seconds": 0.2,
        "clarification_sweep_seconds": 0.2,
        "enable_api_auth": True,
        "api_keys": f"alice:{ALICE_KEY},mallory:{MALLORY_KEY}",
    }
    if bus == "rabbitmq":
        settings["database_url"] = request.getfixturevalue("postgres_url")
    return bus, settings


async def test_a_step_waiting_for_approval_leaves_its_run_waiting_until_the_call_is_approved(
    tmp_path: Path, deployment: tuple[str, dict[str, Any]]
) -> None:
    bus, settings = deployment
    with CountingTools() as tools:
        agents = {"team.yml": _team("scripted", "coordinator"), "gated.yml": _gated(tools.url)}
        async with (
            node_on(bus, tmp_path, agents, **settings) as node,
            _orchestrator(node, **{"X-API-Key": ALICE_KEY}) as alice,
            _orchestrator(node, **{"X-API-Key": MALLORY_KEY}) as mallory,
        ):
            run_id, waiting = await _started_until_waiting(alice)
            run_execution = (await alice.get(f"/executions/{run_id}")).json()
            stolen = await mallory.get(f"/plan-runs/{run_id}")
            listed = (await mallory.get("/plan-runs")).json()["items"]

        # The pause holds nothing: a restarted node finds the run waiting as it was.
        async with (
            node_on(bus, tmp_path, agents, **settings) as node,
            _orchestrator(node, **{"X-API-Key": ALICE_KEY}) as alice,
        ):
            after_restart = await _plan_run(alice, run_id, "waiting_approval", "succeeded", "failed")
            [step] = after_restart["waiting_steps"]
            approved = await alice.post(f"/executions/{step['execution_id']}/approve")
            finished = await _plan_run(alice, run_id, "succeeded", "failed")
            ended = await _ended(alice, run_id)
            step_execution = (await alice.get(f"/executions/{step['execution_id']}")).json()

    assert waiting["status"] == "waiting_approval", waiting
    [gate] = waiting["steps"]
    assert gate["status"] == "waiting_approval"
    [shown] = waiting["waiting_steps"]
    assert (shown["step_id"], shown["agent"], shown["execution_id"]) == ("gate", "gated", gate["execution_id"])
    pending = shown["pending_tool_call"]
    assert (pending["reason"], pending["tool"], pending["arguments"]) == ("approval", "kit__step", {"n": 1})
    assert run_execution["status"] == "running"  # waiting, not failed
    assert stolen.status_code == 404
    assert "kit__step" not in stolen.text
    assert listed == []
    assert after_restart["status"] == "waiting_approval"
    assert after_restart["waiting_steps"] == waiting["waiting_steps"]
    assert approved.status_code == 202
    assert (finished["status"], finished["result"]) == ("succeeded", SYNTHESIS)
    assert finished["waiting_steps"] == []
    [done] = finished["steps"]
    assert (done["status"], done["output"], done["attempts"]) == ("succeeded", "done: step 1", 1)
    assert ended["status"] == "succeeded"
    assert dict(tools.calls) == {1: 1}
    assert step_execution["status"] == "succeeded"
    assert [(s["kind"], s["replayed"]) for s in step_execution["steps"]] == [
        ("model", True),
        ("tool", False),
        ("model", False),
    ]


async def test_a_run_cancelled_while_its_step_waits_cancels_the_waiting_call(
    tmp_path: Path, deployment: tuple[str, dict[str, Any]]
) -> None:
    bus, settings = deployment
    with CountingTools() as tools:
        agents = {"team.yml": _team("scripted", "coordinator"), "gated.yml": _gated(tools.url)}
        async with (
            node_on(bus, tmp_path, agents, **settings) as node,
            _orchestrator(node, **{"X-API-Key": ALICE_KEY}) as alice,
        ):
            run_id, waiting = await _started_until_waiting(alice)
            step_id = waiting["steps"][0]["execution_id"]
            cancelled = await alice.post(f"/executions/{run_id}/cancel")
            run = await _plan_run(alice, run_id, "cancelled", "failed", "succeeded")
            step = await _ended(alice, step_id)
            approved = await alice.post(f"/executions/{step_id}/approve")

    assert waiting["status"] == "waiting_approval", waiting
    assert cancelled.status_code in (200, 202)
    assert run["status"] == "cancelled"
    # No answer can make the call of a run that has ended.
    assert step["status"] == "cancelled", step
    assert run_id in step["error"]["message"]
    assert approved.status_code == 409
    assert dict(tools.calls) == {}


async def test_a_step_pauses_and_resumes_on_its_executions_events_not_on_a_poll(tmp_path: Path) -> None:
    # Polls and sweeps an hour apart: the run learns of the pause from `execution.waiting`
    # and of the answered step's end from `execution.finished`, at once.
    settings: dict[str, Any] = {
        "script": _scripted,
        "collaborative_poll_seconds": 3600,
        "clarification_sweep_seconds": 3600,
    }
    with CountingTools() as tools:
        agents = {"team.yml": _team("scripted", "coordinator"), "gated.yml": _gated(tools.url)}
        async with node_on("memory", tmp_path, agents, **settings) as node, _orchestrator(node) as http:
            task, key = {"task_data": {"prompt": "go"}, "wait": 0}, {"Idempotency-Key": "k-1"}
            answer = await http.post("/agents/team/invoke", json=task, headers=key)
            run_id = answer.json()["execution_id"]
            waiting = await _plan_run(http, run_id, "waiting_approval", "succeeded", "failed", timeout=30)
            retried = (await http.post("/agents/team/invoke", json=task, headers=key)).json()  # as the run stands
            approved = await http.post(f"/executions/{waiting['steps'][0]['execution_id']}/approve")
            finished = await _plan_run(http, run_id, "succeeded", "failed", timeout=30)

    assert waiting["status"] == "waiting_approval"
    assert (retried["plan_run_id"], retried["plan_run_status"]) == (run_id, "waiting_approval")
    assert retried["waiting_steps"] == waiting["waiting_steps"]
    assert [step["pending_tool_call"]["tool"] for step in retried["waiting_steps"]] == ["kit__step"]
    assert approved.status_code == 202
    assert (finished["status"], finished["result"]) == ("succeeded", SYNTHESIS)
    assert dict(tools.calls) == {1: 1}
