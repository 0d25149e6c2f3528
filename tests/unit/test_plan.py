"""The rules of plans: what makes one runnable, which steps may run together, how a step
asks a human and how answers are checked."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentrunner.domain.errors import PlanInvalidError
from agentrunner.domain.plan import (
    Clarification,
    ClarificationKind,
    Plan,
    PlanRunStatus,
    ask_human_output,
    asked_human,
    checked_answer,
    parse_plan,
    plan_problems,
    step_execution_id,
)

AGENTS = {"researcher", "writer", "analyst"}


def _step(step_id: str, agent: str = "researcher", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "agent": agent, "instruction": f"do {step_id}", **fields}


def test_a_valid_plan_parses_from_json_text_in_a_code_fence() -> None:
    text = '```json\n{"steps": [{"id": "a", "agent": "writer", "instruction": "write"}]}\n```'
    plan = parse_plan(text, agents=AGENTS, max_steps=3)
    assert [step.agent for step in plan.steps] == ["writer"]


def test_unknown_agent_is_reported_with_the_agents_to_choose_from() -> None:
    with pytest.raises(PlanInvalidError, match=r"unknown agent 'poet': choose one of analyst, researcher, writer"):
        parse_plan({"steps": [_step("a", "poet")]}, agents=AGENTS, max_steps=3)


def test_too_many_steps_names_the_limit() -> None:
    steps = [_step(str(i)) for i in range(4)]
    with pytest.raises(PlanInvalidError, match=r"4 steps, more than max_plan_steps \(3\)"):
        parse_plan({"steps": steps}, agents=AGENTS, max_steps=3)


def test_a_cycle_is_reported_as_the_path_that_loops() -> None:
    steps = [_step("a", depends_on=["c"]), _step("b", inputs=["a"]), _step("c", depends_on=["b"])]
    with pytest.raises(PlanInvalidError, match=r"cycle: a -> c -> b -> a"):
        parse_plan({"steps": steps}, agents=AGENTS, max_steps=5)


def test_dangling_inputs_and_self_references_are_reported() -> None:
    plan = Plan.model_validate({"steps": [_step("a", inputs=["ghost"]), _step("b", depends_on=["b"])]})
    problems = plan_problems(plan, agents=AGENTS, max_steps=5)
    assert problems == [
        "step 'a' inputs names step 'ghost', which the plan does not have",
        "step 'b' names itself in depends_on",
    ]


def test_unparsable_and_misshapen_plans_say_what_was_expected() -> None:
    with pytest.raises(PlanInvalidError, match="not valid JSON"):
        parse_plan("here is my plan: first...", agents=AGENTS, max_steps=3)
    with pytest.raises(PlanInvalidError, match=r"steps\.0\.agent: Field required"):
        parse_plan({"steps": [{"id": "a", "instruction": "x"}]}, agents=AGENTS, max_steps=3)
    with pytest.raises(PlanInvalidError, match="repeated: a"):
        parse_plan({"steps": [_step("a"), _step("a")]}, agents=AGENTS, max_steps=3)


def test_ready_steps_are_those_whose_needs_are_done() -> None:
    plan = parse_plan(
        [_step("a"), _step("b", inputs=["a"]), _step("c", depends_on=["a"]), _step("d", inputs=["b", "c"])],
        agents=AGENTS,
        max_steps=4,
    )
    assert [s.id for s in plan.ready(set(), set())] == ["a"]
    assert [s.id for s in plan.ready({"a"}, {"a"})] == ["b", "c"]
    assert [s.id for s in plan.ready({"a", "b"}, {"a", "b", "c"})] == []
    assert [s.id for s in plan.ready({"a", "b", "c"}, {"a", "b", "c"})] == ["d"]


@given(st.lists(st.lists(st.integers(min_value=0, max_value=7), max_size=3), min_size=1, max_size=8))
def test_a_plan_is_valid_exactly_when_running_ready_steps_finishes_every_step(needs: list[list[int]]) -> None:
    """Property: validation accepts a graph iff repeatedly running the ready steps runs
    them all (no cycle, no dangling reference)."""
    steps = [_step(f"s{i}", depends_on=[f"s{n}" for n in sorted(set(ns))]) for i, ns in enumerate(needs)]
    plan = Plan.model_validate({"steps": steps})
    done: set[str] = set()
    while ready := plan.ready(done, done):
        done |= {step.id for step in ready}
    assert (not plan_problems(plan, agents=AGENTS, max_steps=8)) == (len(done) == len(steps))


def test_ask_human_round_trips_through_a_step_output() -> None:
    output = ask_human_output({"question": "Which market?", "kind": "choice", "options": ["EU", "US"]})
    request = asked_human(output)
    assert request is not None
    assert (request.question, request.kind, request.options) == (
        "Which market?",
        ClarificationKind.CHOICE,
        ["EU", "US"],
    )
    assert asked_human("A plain answer mentioning nothing special") is None
    assert asked_human('{"answer": 42}') is None


def test_answers_are_checked_against_the_kind_of_question() -> None:
    choice = Clarification(id="c", run_id="r", step_id="s", question="?", kind="choice", options=["EU", "US"])
    confirm = Clarification(id="c", run_id="r", step_id="s", question="?", kind="confirm")
    assert checked_answer(choice, "EU") == "EU"
    with pytest.raises(ValueError, match="not one of the options: EU, US"):
        checked_answer(choice, "Asia")
    assert checked_answer(confirm, "Yes") == "yes"
    with pytest.raises(ValueError, match="answer 'yes' or 'no'"):
        checked_answer(confirm, "maybe")


def test_step_executions_are_deterministic_per_attempt() -> None:
    assert step_execution_id("run", "a", 1) == step_execution_id("run", "a", 1)
    assert step_execution_id("run", "a", 1) != step_execution_id("run", "a", 2)


def test_paused_and_terminal_statuses() -> None:
    assert PlanRunStatus.NEEDS_CLARIFICATION.is_paused
    assert PlanRunStatus.AWAITING_APPROVAL.is_paused
    assert PlanRunStatus.REJECTED.is_terminal
    assert not PlanRunStatus.RUNNING.is_terminal
