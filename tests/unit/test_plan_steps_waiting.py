"""A plan step whose execution waits for a human before a tool call: the step waits with
it (nothing counted until it ends), and the run pauses once nothing else can run; an
answered question resumes a run paused on another step's tool call."""

from __future__ import annotations

from datetime import UTC, datetime

from agentrunner.domain.execution import Execution, ExecutionStatus, Usage
from agentrunner.domain.plan import (
    Clarification,
    ClarificationStatus,
    Plan,
    PlanRun,
    PlanRunStatus,
    PlanStep,
    StepRun,
    StepStatus,
)
from agentrunner.domain.tool_gates import PauseReason, PendingToolCall
from agentrunner.runtime.plan_runs import _with_answer
from agentrunner.runtime.plan_steps import paused, step_finished
from agentrunner.runtime.topics import invoke_topic

AT = datetime(2026, 1, 1, tzinfo=UTC)
PLAN = Plan(steps=[PlanStep(id="a", agent="x", instruction="do a"), PlanStep(id="b", agent="y", instruction="do b")])


def _run(*statuses: StepStatus, **fields: object) -> PlanRun:
    steps = [
        StepRun(step_id=step.id, agent=step.agent, status=status, execution_id=f"e-{step.id}", attempts=1)
        for step, status in zip(PLAN.steps, statuses, strict=True)
    ]
    values = {
        "id": "r",
        "agent": "team",
        "trace_id": "t",
        "status": PlanRunStatus.RUNNING,
        "plan": PLAN,
        "steps": steps,
    }
    return PlanRun.model_validate(values | fields)


def _execution(status: ExecutionStatus, **fields: object) -> Execution:
    values = {"execution_id": "e-a", "agent": "x", "status": status, "trace_id": "t", "usage": Usage(input_tokens=7)}
    return Execution.model_validate(values | fields)


def test_a_step_whose_execution_waits_waits_with_it_and_counts_nothing_until_it_ends() -> None:
    pending = PendingToolCall(
        reason=PauseReason.APPROVAL, tool="kit__step", call_id="c1", generation=1, seq=2, asked_at=AT
    )
    run = _run(StepStatus.RUNNING, StepStatus.RUNNING)

    waiting, events = step_finished(
        "a", _execution(ExecutionStatus.WAITING_APPROVAL, pending_tool_call=pending), run, allow=True, timeout=60
    )
    resumed = waiting.model_copy(
        update={"steps": [s.model_copy(update={"status": StepStatus.RUNNING}) for s in waiting.steps]}
    )
    ended, _ = step_finished(
        "a", _execution(ExecutionStatus.SUCCEEDED, output="a done"), resumed, allow=True, timeout=60
    )

    step = waiting.steps[0]
    assert (step.status, step.usage, step.finished_at, step.output) == (
        StepStatus.WAITING_APPROVAL,
        Usage(),
        None,
        None,
    )
    assert waiting.usage == Usage()
    assert events == []
    assert ended.steps[0].status is StepStatus.SUCCEEDED
    assert ended.steps[0].usage == ended.usage == Usage(input_tokens=7)  # once


def test_a_run_pauses_on_a_waiting_step_once_nothing_else_runs_and_a_question_comes_first() -> None:
    both_waiting, _ = paused(_run(StepStatus.WAITING_APPROVAL, StepStatus.WAITING_APPROVAL))
    one_running, _ = paused(_run(StepStatus.WAITING_APPROVAL, StepStatus.RUNNING))
    with_question, _ = paused(_run(StepStatus.WAITING_APPROVAL, StepStatus.NEEDS_CLARIFICATION))

    assert both_waiting.status is PlanRunStatus.WAITING_APPROVAL
    assert one_running.status is PlanRunStatus.RUNNING
    assert with_question.status is PlanRunStatus.NEEDS_CLARIFICATION
    assert PlanRunStatus.WAITING_APPROVAL.is_paused


def test_an_answered_question_resumes_a_run_paused_on_another_steps_tool_call() -> None:
    question = Clarification(id="q", run_id="r", step_id="b", question="which?")
    run = _run(
        StepStatus.WAITING_APPROVAL,
        StepStatus.NEEDS_CLARIFICATION,
        status=PlanRunStatus.WAITING_APPROVAL,
        clarifications=[question],
    )

    changed, events = _with_answer(run, question, "this one", "alice", ClarificationStatus.ANSWERED)

    assert changed.status is PlanRunStatus.RUNNING
    assert [s.status for s in changed.steps] == [StepStatus.WAITING_APPROVAL, StepStatus.PENDING]
    assert [event.topic for event in events] == [invoke_topic("team")]
