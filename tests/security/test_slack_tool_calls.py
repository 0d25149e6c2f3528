"""Slack buttons that answer a tool call an execution waits on, played by an attacker: a
click from another workspace, a forged action_id naming another tenant's execution (with
its genuine pause token), oversized and malformed action_ids, a button of an old question,
a forged `execution.waiting` event, and the same button clicked twice. Each changes
nothing but the one genuine first click, and the tool runs once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.plan import PlanRun, StepRun
from agentrunner.domain.slack import slack_origin
from agentrunner.domain.slack_tool_calls import pause_token, tool_call_action_id
from agentrunner.domain.tool_gates import Decision
from agentrunner.node import Node
from agentrunner.runtime.agent_run import COLLABORATION_KEY
from agentrunner.runtime.slack_tool_calls import slack_origin_for
from agentrunner.runtime.topics import waiting_topic
from tests.fakes.slack_server import FakeSlack
from tests.integration.conftest import node_on
from tests.integration.test_durable_agents import CountingTools, _orchestrator
from tests.integration.test_slack_gateway import _client, _post, _settings
from tests.integration.test_slack_tool_calls import asked_in_slack, buttons_of, click_body
from tests.integration.test_tool_gates import _gated, _model, _status
from tests.security.conftest import TEAM_A_KEY


@pytest.fixture
def slack() -> Any:
    with FakeSlack(retry_after=0) as fake:
        yield fake


async def _clicks(node: Node, slack: FakeSlack, button: dict[str, Any], attempts: list[dict[str, Any]]) -> list[int]:
    """Each of `attempts` (click_body's arguments over `button`) as a signed click, in turn."""
    statuses = []
    async with _client(node) as http:
        for attempt in attempts:
            body = click_body(button, response_url=slack.response_url("attack"), **{"user": "U66", **attempt})
            statuses.append((await _post(http, "/slack/interactions", body)).status_code)
    return statuses


async def _ended(node: Node, execution_id: str) -> Execution:
    async def probe() -> Execution | None:
        execution = await node.store.executions.get_execution(execution_id)
        return execution if execution.status.is_terminal else None

    deadline = asyncio.get_running_loop().time() + 30
    while (ended := await probe()) is None:
        assert asyncio.get_running_loop().time() < deadline, "the approved run never ended"
        await asyncio.sleep(0.05)
    return ended


async def _interactions_seen(node: Node) -> list[Event]:
    seen: list[Event] = []

    async def keep(event: Event) -> None:
        seen.append(event)

    await node.bus.subscribe(f"test.{uuid4().hex[:8]}", ["slack.interaction.#"], keep, exclusive=True)
    return seen


async def test_only_a_click_from_the_runs_workspace_on_its_current_question_answers_and_only_once(
    tmp_path: Path, slack: FakeSlack
) -> None:
    asked: Counter[str] = Counter()
    with CountingTools() as tools:
        settings = _settings(
            slack,
            slack_commands={"/ask": "gated"},
            slack_default_agent="",
            enable_api_auth=True,
            api_keys=f"team-a:{TEAM_A_KEY}",
        )
        async with (
            node_on("memory", tmp_path, {"gated.yml": _gated(tools.url)}, script=_model(asked), **settings) as node,
            _orchestrator(node, **{"X-API-Key": TEAM_A_KEY}) as team_a,
        ):
            published = await _interactions_seen(node)
            # Team A's own run, started through the API, waits on the same kind of call.
            theirs = (
                await team_a.post("/agents/gated/invoke", json={"task_data": {"prompt": "gated"}, "wait": 0})
            ).json()
            their_id = theirs["execution_id"]
            await _status(team_a, their_id, "waiting_approval")
            their_token = pause_token((await node.store.executions.get_execution(their_id)).pending_tool_call)  # type: ignore[arg-type]
            # Forged on the bus: the slack role reads the stored run, which is not Slack's.
            await node.bus.publish(
                Event(
                    topic=waiting_topic("gated"), payload={"execution_id": their_id, "from_slack": True}, trace_id="t"
                )
            )
            execution_id, question = await asked_in_slack(node, slack)
            approve = next(b for b in buttons_of(question) if b["value"] == "approve")
            token = approve["action_id"].rsplit(":", 1)[1]
            forged = {
                "another workspace": {"team": "T9999"},
                "no workspace": {"team": ""},
                "another tenant's run": {"action_id": tool_call_action_id(Decision.APPROVE, their_id, their_token)},
                "an unknown run": {"action_id": tool_call_action_id(Decision.APPROVE, "0" * 32, token)},
                "an old question": {"action_id": tool_call_action_id(Decision.APPROVE, execution_id, "0" * 16)},
                "another question's answer": {"action_id": tool_call_action_id(Decision.HAPPENED, execution_id, token)},
                "an unknown answer": {"action_id": f"toolcall:nuke:{execution_id}:{token}"},
                "oversized": {"action_id": f"toolcall:approve:{execution_id}:{token}" + "0" * 5000},
                "a path for an id": {"action_id": f"toolcall:approve:../{execution_id}:{token}"},
                "an upper-case token": {"action_id": f"toolcall:approve:{execution_id}:{token.upper()}"},
                "no token": {"action_id": f"toolcall:approve:{execution_id}"},
            }
            refused = await _clicks(node, slack, approve, list(forged.values()))
            await asyncio.sleep(0.5)  # what an answer would have started by now
            ours_after = await node.store.executions.get_execution(execution_id)
            theirs_after = await node.store.executions.get_execution(their_id)
            posted_after_attacks = [m.path for m in slack.messages()]
            # The genuine button, clicked twice (a double click: two requests).
            genuine = await _clicks(node, slack, approve, [{"user": "U42"}, {"user": "U42"}])
            finished = await _ended(node, execution_id)
            late = await _clicks(node, slack, approve, [{"user": "U43"}])
            await asyncio.sleep(0.3)
            marks = slack.messages("/response/attack")

    assert refused == [200] * len(forged), "Slack is acknowledged, nothing more"
    assert ours_after.status is ExecutionStatus.WAITING_APPROVAL
    assert ours_after.pending_tool_call is not None
    assert ours_after.pending_tool_call.answer is None
    assert theirs_after.status is ExecutionStatus.WAITING_APPROVAL, "another tenant's run is out of Slack's reach"
    assert theirs_after.pending_tool_call is not None
    assert theirs_after.pending_tool_call.answer is None
    assert posted_after_attacks == ["/response/c1"], "the Slack run's question only: no post for a forged event"
    assert published == [], "a tool call button (even a malformed one) is never passed on to agents"
    assert (genuine, late) == ([200, 200], [200])
    assert finished.status is ExecutionStatus.SUCCEEDED, finished
    assert dict(tools.calls) == {1: 1}, "clicked three times: run once"
    assert len(marks) == 1, "marked answered once, by the click that answered"
    assert "Approved by <@U42>" in marks[0].body["text"]


async def test_an_execution_naming_a_slack_started_plan_run_in_its_input_is_not_its_step(tmp_path: Path) -> None:
    """A step's Slack origin is its plan run's only when the run lists it as a step, in its
    tenant: a caller's task_data naming another run (its `collaboration.run_id`) gets no
    origin, so its call is never posted, nor answered from, that run's Slack thread."""
    async with node_on("memory", tmp_path, {}) as node:
        origin = slack_origin(team_id="T0001", channel_id="C1", response_url="https://hooks.slack.test/r")
        run = PlanRun(id="run-1", agent="team", trace_id="t", tenant="alice", origin={**origin, "source": "slack"})
        step = Execution(
            trace_id="t",
            execution_id="step-1",
            agent="gated",
            input={COLLABORATION_KEY: {"run_id": "run-1"}},
            tenant="alice",
        )
        run = run.model_copy(update={"steps": [StepRun(step_id="s", agent="gated", execution_id="step-1")]})
        await node.store.plan_runs.create_plan_run(run)
        named = {COLLABORATION_KEY: {"run_id": "run-1"}}
        forged = [
            Execution(
                trace_id="t", execution_id="mine", agent="gated", input=named, tenant="alice"
            ),  # not a step of it
            Execution(
                trace_id="t", execution_id="step-1", agent="gated", input=named, tenant="mallory"
            ),  # another tenant
            Execution(trace_id="t", execution_id="x", agent="gated", input={COLLABORATION_KEY: {"run_id": "r" * 4000}}),
            Execution(trace_id="t", execution_id="y", agent="gated", input={COLLABORATION_KEY: {"run_id": ["run-1"]}}),
            Execution(trace_id="t", execution_id="z", agent="gated", input={COLLABORATION_KEY: "run-1"}),
        ]
        found = await slack_origin_for(step, node.store.plan_runs)
        refused = [await slack_origin_for(execution, node.store.plan_runs) for execution in forged]

    assert found is not None
    assert found["team_id"] == "T0001"
    assert refused == [None] * len(forged)
