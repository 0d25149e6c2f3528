"""Collaborative agents in a whole node, on each event bus, with the `scripted` provider
playing the planner, the step agents and the synthesis: plans run in dependency order with
independent steps together, a step's question is answered over HTTP or the bus, a plan
waits for approval, an invalid plan is asked for again once, and questions time out."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from agentrunner.domain.event import Event
from agentrunner.domain.execution import ExecutionStatus
from agentrunner.domain.llm import Completion, LLMRequest, ToolCall
from agentrunner.domain.plan import PlanRun, PlanRunStatus
from agentrunner.node import Node
from tests.integration.conftest import BUSES, node_on

STEP_SECONDS = 0.6
FAST = {"collaborative_poll_seconds": 0.2, "clarification_sweep_seconds": 0.2}


def _worker(name: str, description: str) -> str:
    return (
        f"name: {name}\nagent_type: t\nexecution_mode: autonomous\ndescription: {description}\n"
        f"tags: [{name}-tag]\nllm_config: {{provider: scripted, model: {name}}}\n"
    )


def _team(**collaborative: Any) -> str:
    settings = {"preferred_collaborators": ["researcher", "analyst"], "max_plan_steps": 4, **collaborative}
    return (
        "name: team\nagent_type: t\nexecution_mode: collaborative\ndescription: the team\n"
        "system_prompt: You coordinate.\nllm_config: {provider: scripted, model: coordinator}\n"
        f"collaborative_config: {orjson.dumps(settings).decode()}\n"
    )


WORKERS = {
    f"{name}.yml": _worker(name, f"{name} of the team") for name in ("researcher", "analyst", "writer", "editor")
}

FOUR_STEPS = {
    "steps": [
        {"id": "facts", "agent": "researcher", "instruction": "find the facts"},
        {"id": "numbers", "agent": "analyst", "instruction": "crunch numbers", "inputs": ["facts"]},
        {"id": "draft", "agent": "writer", "instruction": "draft the text", "inputs": ["facts"]},
        {"id": "final", "agent": "editor", "instruction": "edit", "inputs": ["numbers", "draft"]},
    ]
}


def _plan_call(plan: dict[str, Any]) -> Completion:
    """A planner's answer in the provider's tool-call shape."""
    return Completion(text="", tool_calls=[ToolCall(id="call-plan", name="submit_plan", arguments=plan)])


def _ask(question: str, **fields: Any) -> Completion:
    return Completion(
        text="", tool_calls=[ToolCall(id="call-ask", name="ask_human", arguments={"question": question, **fields})]
    )


class Team:
    """The scripted models: planner replies in turn, step agents that take STEP_SECONDS
    (noting when), the coordinator's synthesis; every request kept."""

    def __init__(
        self,
        plans: list[str | Completion],
        steps: dict[str, Callable[[str], str | Completion]] | None = None,
        seconds: dict[str, float] | None = None,
    ):
        self.plans = plans
        self.steps = steps or {}
        self.seconds = seconds or {}
        self.planner_requests: list[LLMRequest] = []
        self.step_prompts: dict[str, list[str]] = {}
        self.spans: dict[str, tuple[float, float]] = {}
        self.calls: Counter[str] = Counter()

    async def __call__(self, request: LLMRequest) -> str | Completion:
        if any(tool.name == "submit_plan" for tool in request.tools):
            self.planner_requests.append(request)
            return self.plans[min(len(self.planner_requests), len(self.plans)) - 1]
        prompt = request.messages[-1].content
        if request.model == "coordinator":
            return "SYNTHESIS of " + " + ".join(sorted(line for line in prompt.splitlines() if line.endswith("done")))
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.calls[request.model] += 1
        self.step_prompts.setdefault(request.model, []).append(prompt)
        await asyncio.sleep(self.seconds.get(request.model, STEP_SECONDS))
        self.spans[request.model] = (start, loop.time())
        reply = self.steps.get(request.model)
        return reply(prompt) if reply else f"{request.model} done"


def _client(node: Node) -> httpx.AsyncClient:
    app = node.apps()["orchestrator"]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://orchestrator", timeout=60)


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    async def poll() -> Any:
        while not (result := await check()):
            await asyncio.sleep(0.05)
        return result

    return await asyncio.wait_for(poll(), timeout)


async def _run_in(http: httpx.AsyncClient, run_id: str, *statuses: PlanRunStatus) -> PlanRun:
    async def reached() -> PlanRun | None:
        response = await http.get(f"/plan-runs/{run_id}")
        if response.status_code != 200:
            return None
        run = PlanRun.model_validate(response.json())
        return run if run.status in statuses else None

    run: PlanRun = await _until(reached)
    return run


async def _ended(http: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    """The execution once it ended. A run's end and its execution's end are two saves
    (runtime/plan_runs.PlanRuns.update), so a run seen ended may still have its execution
    running for a moment: read it only once it ended too."""

    async def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"/executions/{execution_id}")).json()
        return body if ExecutionStatus(body["status"]).is_terminal else None

    execution: dict[str, Any] = await _until(ended)
    return execution


async def _listen(node: Node, pattern: str, into: list[Event]) -> None:
    async def keep(event: Event) -> None:
        into.append(event)

    name = pattern.split(".", maxsplit=1)[0]
    await node.bus.subscribe(f"test.{node.node_id}.{name}", [pattern], keep, exclusive=True)


@pytest.mark.parametrize("bus", BUSES)
async def test_a_four_step_plan_runs_its_independent_pair_together_and_completes(bus: str, tmp_path: Path) -> None:
    team = Team([_plan_call(FOUR_STEPS)])
    completed: list[Event] = []
    async with node_on(bus, tmp_path, {"team.yml": _team(), **WORKERS}, script=team, **FAST) as node:
        await _listen(node, "collaboration.completed.*", completed)
        async with _client(node) as http:
            response = await http.post("/agents/team/invoke", json={"task_data": {"prompt": "a report"}, "wait": 60})
            assert response.status_code == 200, response.text
            finished = response.json()
            run = PlanRun.model_validate((await http.get(f"/plan-runs/{finished['execution_id']}")).json())
            listed = (await http.get("/plan-runs", params={"agent": "team"})).json()["items"]
        await _until(lambda: asyncio.sleep(0, completed))

    assert finished["status"] == "succeeded"
    assert finished["output"] == "SYNTHESIS of analyst done + editor done + researcher done + writer done"
    assert (finished["plan_run_id"], finished["plan_run_status"]) == (finished["execution_id"], "succeeded")
    assert [step["status"] for step in finished["steps"]] == ["succeeded"] * 4
    assert finished["clarifications"] == []
    assert run.status is PlanRunStatus.SUCCEEDED
    assert run.result == finished["output"]
    assert [(s.step_id, s.status.value, s.output) for s in run.steps] == [
        ("facts", "succeeded", "researcher done"),
        ("numbers", "succeeded", "analyst done"),
        ("draft", "succeeded", "writer done"),
        ("final", "succeeded", "editor done"),
    ]
    assert all(step.usage.input_tokens > 0 and step.attempts == 1 for step in run.steps)
    assert run.usage.output_tokens > sum(step.usage.output_tokens for step in run.steps)  # + planner, synthesis
    assert [item["id"] for item in listed] == [run.id]
    # The independent pair overlapped; each step waited for what it needs.
    numbers, draft = team.spans["analyst"], team.spans["writer"]
    assert numbers[0] < draft[1]
    assert draft[0] < numbers[1]
    assert team.spans["researcher"][1] <= min(numbers[0], draft[0])
    assert team.spans["editor"][0] >= max(numbers[1], draft[1])
    assert "analyst done" in team.step_prompts["editor"][0]
    assert "writer done" in team.step_prompts["editor"][0]
    assert team.calls == Counter({"researcher": 1, "analyst": 1, "writer": 1, "editor": 1})
    # The planner saw the participants, preferred first, with descriptions and tags.
    planner_prompt = team.planner_requests[0].messages[-1].content
    assert planner_prompt.index('"researcher"') < planner_prompt.index('"editor"')
    assert "analyst of the team" in planner_prompt
    assert "writer-tag" in planner_prompt
    assert [(e.topic, e.payload["status"], e.payload["result"]) for e in completed] == [
        (f"collaboration.completed.{run.id}", "succeeded", run.result)
    ]


def _asking_writer(prompt: str) -> str | Completion:
    if "Their answer:" in prompt:
        return "written for " + prompt.rsplit("Their answer:", 1)[1].strip()
    return _ask("Which market?", kind="choice", options=["EU", "US"])


ONE_QUESTION = {"steps": [{"id": "draft", "agent": "writer", "instruction": "draft for the right market"}]}


@pytest.mark.parametrize("bus", BUSES)
@pytest.mark.parametrize("answer_by", ["http", "bus"])
async def test_a_step_question_pauses_the_run_until_it_is_answered(bus: str, answer_by: str, tmp_path: Path) -> None:
    team = Team([_plan_call(ONE_QUESTION)], steps={"writer": _asking_writer})
    requested: list[Event] = []
    task = {"prompt": "a launch post", "source": "slack", "channel_id": "C1", "thread_ts": "1.2", "user_id": "U1"}
    async with node_on(bus, tmp_path, {"team.yml": _team(), **WORKERS}, script=team, **FAST) as node:
        await _listen(node, "clarification.requested.*", requested)
        async with _client(node) as http:
            accepted = (await http.post("/agents/team/invoke", json={"task_data": task, "wait": 0})).json()
            run_id = accepted["execution_id"]
            assert accepted["plan_run_id"] == run_id
            paused = await _run_in(http, run_id, PlanRunStatus.NEEDS_CLARIFICATION)
            question = paused.clarifications[0]
            url = f"/plan-runs/{run_id}/clarifications/{question.id}"
            not_an_option = await http.post(url, json={"response": "Asia"})
            if answer_by == "http":
                answered = await http.post(url, json={"response": "EU", "answered_by": "U1"})
                assert answered.status_code == 200, answered.text
            else:
                payload = {"run_id": run_id, "clarification_id": question.id, "answer": "EU", "answered_by": "U1"}
                await node.bus.publish(Event(topic=f"clarification.answered.{run_id}", payload=payload, trace_id="t"))
            done = await _run_in(http, run_id, PlanRunStatus.SUCCEEDED, PlanRunStatus.FAILED)
            again = await http.post(url, json={"response": "US"})
            execution = await _ended(http, run_id)

    assert (question.question, question.kind.value, question.options) == ("Which market?", "choice", ["EU", "US"])
    assert not_an_option.status_code == 400
    assert "not one of the options: EU, US" in not_an_option.text
    assert done.status is PlanRunStatus.SUCCEEDED, done.error
    assert done.steps[0].output == "written for EU"
    assert done.steps[0].attempts == 2
    assert (done.clarifications[0].answer, done.clarifications[0].answered_by) == ("EU", "U1")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    assert execution["status"] == "succeeded"
    assert execution["output"] == done.result
    [announced] = requested
    assert announced.payload == {
        "run_id": run_id,
        "clarification_id": question.id,
        "step_id": "draft",
        "question": "Which market?",
        "kind": "choice",
        "options": ["EU", "US"],
        "default": None,
        # task_data shaped like a Slack request is not an origin (issue 19): only the gateway's is.
        "origin": None,
    }


async def test_a_plan_held_for_approval_runs_only_once_approved_as_edited(tmp_path: Path) -> None:
    team = Team([_plan_call(FOUR_STEPS)])
    agents = {"team.yml": _team(require_plan_approval=True), **WORKERS}
    async with node_on("memory", tmp_path, agents, script=team, **FAST) as node, _client(node) as http:
        run_id = (await http.post("/agents/team/invoke", json={"task_data": {"prompt": "x"}, "wait": 0})).json()[
            "execution_id"
        ]
        held = await _run_in(http, run_id, PlanRunStatus.AWAITING_APPROVAL)
        await asyncio.sleep(0.5)
        untouched = sum(team.calls.values())
        bad = await http.post(
            f"/plan-runs/{run_id}/approve",
            json={"plan": {"steps": [{"id": "a", "agent": "poet", "instruction": "rhyme"}]}},
        )
        edited = {"steps": [{"id": "only", "agent": "editor", "instruction": "edit alone"}]}
        approved = await http.post(f"/plan-runs/{run_id}/approve", json={"plan": edited})
        twice = await http.post(f"/plan-runs/{run_id}/approve")
        done = await _run_in(http, run_id, PlanRunStatus.SUCCEEDED, PlanRunStatus.FAILED)

    assert held.plan is not None
    assert len(held.plan.steps) == 4
    assert untouched == 0
    assert bad.status_code == 422
    assert "unknown agent 'poet'" in bad.json()["error"]["message"]
    assert approved.status_code == 200, approved.text
    assert twice.status_code == 409
    assert [(s.step_id, s.status.value) for s in done.steps] == [("only", "succeeded")]
    assert team.calls == Counter({"editor": 1})


async def test_a_rejected_plan_ends_the_run_and_cancels_its_execution(tmp_path: Path) -> None:
    team = Team([_plan_call(FOUR_STEPS)])
    agents = {"team.yml": _team(require_plan_approval=True), **WORKERS}
    async with node_on("memory", tmp_path, agents, script=team, **FAST) as node, _client(node) as http:
        run_id = (await http.post("/agents/team/invoke", json={"task_data": {"prompt": "x"}, "wait": 0})).json()[
            "execution_id"
        ]
        await _run_in(http, run_id, PlanRunStatus.AWAITING_APPROVAL)
        rejected = await http.post(f"/plan-runs/{run_id}/reject", json={"reason": "too costly"})
        execution = (await http.get(f"/executions/{run_id}")).json()
        calls_before = sum(team.calls.values())
        alone = (await http.post("/agents/editor/invoke", json={"task_data": {"prompt": "x"}, "wait": 60})).json()

    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["error"]["message"] == "the plan was rejected: too costly"
    assert execution["status"] == "cancelled"
    assert execution["error"]["code"] == "plan_rejected"
    assert calls_before == 0
    assert alone["status"] == "succeeded"
    assert "plan_run_id" not in alone  # only collaborative agents answer with a plan run


async def test_an_invalid_plan_is_asked_for_again_once_with_what_was_wrong(tmp_path: Path) -> None:
    unknown = {"steps": [{"id": "a", "agent": "poet", "instruction": "rhyme"}]}
    team = Team([_plan_call(unknown), orjson.dumps(ONE_QUESTION["steps"]).decode()])
    bounded = _team().replace("model: coordinator}", "model: coordinator, max_tokens: 321}")
    agents = {"team.yml": bounded, **WORKERS}
    async with node_on("memory", tmp_path, agents, script=team, **FAST) as node, _client(node) as http:
        finished = (await http.post("/agents/team/invoke", json={"task_data": {"prompt": "x"}, "wait": 60})).json()

    assert finished["status"] == "succeeded", finished
    assert len(team.planner_requests) == 2
    assert [r.max_tokens for r in team.planner_requests] == [321, 321]  # the agent's bound holds for its plans
    correction = team.planner_requests[1].messages[-1]
    assert correction.role == "tool"
    assert "unknown agent 'poet'" in correction.content
    assert team.calls == Counter({"writer": 1})


async def test_a_plan_invalid_twice_fails_the_run_with_both_reasons(tmp_path: Path) -> None:
    cycle = {
        "steps": [
            {"id": "a", "agent": "writer", "instruction": "x", "depends_on": ["b"]},
            {"id": "b", "agent": "writer", "instruction": "y", "depends_on": ["a"]},
        ]
    }
    team = Team(["I would rather chat.", _plan_call(cycle)])
    agents = {"team.yml": _team(), **WORKERS}
    async with node_on("memory", tmp_path, agents, script=team, **FAST) as node, _client(node) as http:
        finished = (await http.post("/agents/team/invoke", json={"task_data": {"prompt": "x"}, "wait": 60})).json()
        run = (await http.get(f"/plan-runs/{finished['execution_id']}")).json()

    assert finished["status"] == "failed"
    assert finished["error"]["code"] == "plan_invalid"
    assert "invalid twice" in finished["error"]["message"]
    assert "not valid JSON" in finished["error"]["message"]
    assert "cycle: a -> b -> a" in finished["error"]["message"]
    assert run["status"] == "failed"
    assert run["plan"] is None
    assert sum(team.calls.values()) == 0


@pytest.mark.parametrize(("default", "expected"), [(None, PlanRunStatus.FAILED), ("US", PlanRunStatus.SUCCEEDED)])
async def test_an_unanswered_question_times_out_to_its_default_or_fails_the_run(
    default: str | None, expected: PlanRunStatus, tmp_path: Path
) -> None:
    def writer(prompt: str) -> str | Completion:
        if "Their answer:" in prompt:
            return "written for " + prompt.rsplit("Their answer:", 1)[1].strip()
        return _ask("Which market?", kind="choice", options=["EU", "US"], **({"default": default} if default else {}))

    team = Team([_plan_call(ONE_QUESTION)], steps={"writer": writer})
    agents = {"team.yml": _team(clarification_timeout_seconds=0.5), **WORKERS}
    async with node_on("memory", tmp_path, agents, script=team, **FAST) as node, _client(node) as http:
        run_id = (await http.post("/agents/team/invoke", json={"task_data": {"prompt": "x"}, "wait": 0})).json()[
            "execution_id"
        ]
        run = await _run_in(http, run_id, PlanRunStatus.SUCCEEDED, PlanRunStatus.FAILED)
        execution = await _ended(http, run_id)

    assert run.status is expected
    if default is None:
        assert run.clarifications[0].status.value == "expired"
        assert run.error is not None
        assert run.error.code == "clarification_timed_out"
        assert "was not answered within 0.5 s" in run.error.message
        assert execution["status"] == "failed"
    else:
        assert (run.clarifications[0].status.value, run.clarifications[0].answer) == ("defaulted", "US")
        assert run.steps[0].output == "written for US"


async def test_cancelling_a_collaborative_execution_cancels_its_run_and_its_running_step(tmp_path: Path) -> None:
    team = Team([_plan_call(ONE_QUESTION)], seconds={"writer": 30})
    agents = {"team.yml": _team(), **WORKERS}
    async with node_on("memory", tmp_path, agents, script=team, **FAST) as node, _client(node) as http:
        run_id = (await http.post("/agents/team/invoke", json={"task_data": {"prompt": "x"}, "wait": 0})).json()[
            "execution_id"
        ]
        await _until(lambda: asyncio.sleep(0, team.calls["writer"]))
        running = await _run_in(http, run_id, PlanRunStatus.RUNNING)
        cancelled = await http.post(f"/executions/{run_id}/cancel")
        run = await _run_in(http, run_id, PlanRunStatus.CANCELLED)
        step_execution = running.steps[0].execution_id

        async def step_stopped() -> dict[str, Any] | None:
            body = (await http.get(f"/executions/{step_execution}")).json()
            return body if body["status"] == "cancelled" else None

        stopped = await _until(step_stopped)
        execution = await _ended(http, run_id)

    assert cancelled.status_code in (200, 202), cancelled.text
    assert run.error is not None
    assert run.error.code == "cancelled"
    assert execution["status"] == "cancelled"
    assert stopped["agent"] == "writer"


async def test_a_step_whose_agent_became_unavailable_fails_the_run_saying_so(tmp_path: Path) -> None:
    team = Team([_plan_call(FOUR_STEPS)])
    agents = {"team.yml": _team(require_plan_approval=True), **WORKERS}
    async with node_on("memory", tmp_path, agents, script=team, **FAST) as node, _client(node) as http:
        run_id = (await http.post("/agents/team/invoke", json={"task_data": {"prompt": "x"}, "wait": 0})).json()[
            "execution_id"
        ]
        await _run_in(http, run_id, PlanRunStatus.AWAITING_APPROVAL)
        (tmp_path / "agents" / "researcher.yml").unlink()
        await node.reload_agents()
        await http.post(f"/plan-runs/{run_id}/approve")
        run = await _run_in(http, run_id, PlanRunStatus.FAILED, PlanRunStatus.SUCCEEDED)

    assert run.status is PlanRunStatus.FAILED
    assert run.error is not None
    assert run.error.message.startswith("step 'facts' (researcher) failed: agent 'researcher' not found")
    assert team.calls == Counter()
