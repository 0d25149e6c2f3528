"""How a plan run's record changes as its steps go: pure functions from the run as stored
to the run as it should be saved (with the events to announce), applied by
`PlanRuns.update` and applied again to a fresh read when another writer saved meanwhile.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agentrunner.domain.errors import AgentRunnerError, StepFailedError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionError, ExecutionStatus, utcnow
from agentrunner.domain.llm import Spend, add_cost
from agentrunner.domain.plan import (
    Clarification,
    PlanRun,
    PlanRunStatus,
    StepRun,
    StepStatus,
    asked_human,
    clarification_id,
    step_execution_id,
)
from agentrunner.runtime.agent_run import COLLABORATION_KEY, user_prompt
from agentrunner.runtime.plan_runs import Change, ended
from agentrunner.runtime.topics import clarification_requested_topic


def ready_steps(run: PlanRun) -> list[str]:
    """Pending steps whose needs have all succeeded."""
    assert run.plan is not None
    done = {step.step_id for step in run.steps if step.status is StepStatus.SUCCEEDED}
    pending = {step.step_id for step in run.steps if step.status is StepStatus.PENDING}
    return [step.id for step in run.plan.steps if step.id in pending and step.needs <= done]


def started(step_ids: list[str], current: PlanRun) -> Change:
    if current.status is not PlanRunStatus.RUNNING:
        return current, []
    ready = set(ready_steps(current)) & set(step_ids)
    now = utcnow()
    steps = [
        step.model_copy(
            update={
                "status": StepStatus.RUNNING,
                "attempts": step.attempts + 1,
                "execution_id": step_execution_id(current.id, step.step_id, step.attempts + 1),
                "started_at": step.started_at or now,
            }
        )
        if step.step_id in ready
        else step
        for step in current.steps
    ]
    return current.model_copy(update={"steps": steps}), []


def step_finished(step_id: str, execution: Execution, current: PlanRun, *, allow: bool, timeout: float) -> Change:
    """`current` with the outcome of a step's execution (a question it asked, included)."""
    step = current.step_run(step_id)
    if current.status.is_terminal or step is None or step.execution_id != execution.execution_id:
        return current, []
    if step.status is not StepStatus.RUNNING:
        return current, []
    if execution.status is ExecutionStatus.WAITING_APPROVAL:
        # Not an outcome: the step waits with its execution (which holds what it spent
        # so far; counted when it ends) until a human answers the call.
        waiting = step.model_copy(update={"status": StepStatus.WAITING_APPROVAL})
        return current.model_copy(update={"steps": [waiting if s.step_id == step_id else s for s in current.steps]}), []
    now = utcnow()
    spent: dict[str, Any] = {
        "usage": step.usage + execution.usage,
        "cost_usd": add_cost(step.cost_usd, execution.cost_usd),
        "finished_at": now,
    }
    run = current.model_copy(
        update={"usage": current.usage + execution.usage, "cost_usd": add_cost(current.cost_usd, execution.cost_usd)}
    )
    events: list[Event] = []
    question = asked_human(execution.output) if execution.status is ExecutionStatus.SUCCEEDED else None
    if execution.status is not ExecutionStatus.SUCCEEDED:
        error = execution.error or ExecutionError(code="step_failed", message=f"ended {execution.status.value}")
        changed = step.model_copy(update={"status": StepStatus.FAILED, "error": error, **spent})
    elif question is not None and not allow:
        error = ExecutionError(
            code="clarification_not_allowed",
            message=f"asked a human {question.question!r}, but allow_human_clarification is false",
        )
        changed = step.model_copy(update={"status": StepStatus.FAILED, "error": error, **spent})
    elif question is not None:
        asked = Clarification(
            id=clarification_id(run.id, step_id, step.attempts),
            run_id=run.id,
            step_id=step_id,
            question=question.question,
            kind=question.kind,
            options=question.options,
            default=question.default,
            asked_at=now,
            expires_at=now + timedelta(seconds=timeout),
        )
        changed = step.model_copy(update={"status": StepStatus.NEEDS_CLARIFICATION, **spent})
        run = run.model_copy(update={"clarifications": [*run.clarifications, asked]})
        payload = {
            "run_id": run.id,
            "clarification_id": asked.id,
            "step_id": step_id,
            "question": asked.question,
            "kind": asked.kind.value,
            "options": asked.options,
            "default": asked.default,
            "origin": run.origin,
        }
        events.append(Event(topic=clarification_requested_topic(run.id), payload=payload, trace_id=run.trace_id))
    else:
        changed = step.model_copy(update={"status": StepStatus.SUCCEEDED, "output": execution.output, **spent})
        run = run.model_copy(update={"state": {**run.state, step_id: execution.output}})
    steps = [changed if s.step_id == step_id else s for s in run.steps]
    return run.model_copy(update={"steps": steps}), events


def paused(current: PlanRun) -> Change:
    """Paused for a human when nothing can run until an answer comes: a step's question
    (`needs_clarification`), else a step's tool call (`waiting_approval`)."""
    if current.status is not PlanRunStatus.RUNNING or ready_steps(current):
        return current, []
    if any(step.status is StepStatus.RUNNING for step in current.steps):
        return current, []
    waiting = {step.status for step in current.steps}
    if StepStatus.NEEDS_CLARIFICATION in waiting:
        return current.model_copy(update={"status": PlanRunStatus.NEEDS_CLARIFICATION}), []
    if StepStatus.WAITING_APPROVAL in waiting:
        return current.model_copy(update={"status": PlanRunStatus.WAITING_APPROVAL}), []
    return current, []


def failed_by_step(current: PlanRun) -> Change:
    failed = next((step for step in current.steps if step.status is StepStatus.FAILED), None)
    if current.status.is_terminal or failed is None:
        return current, []
    reason = failed.error.message if failed.error else "it failed"
    error = StepFailedError(f"step {failed.step_id!r} ({failed.agent}) failed: {reason}")
    return ended(current, PlanRunStatus.FAILED, error=error)


def ending(
    status: PlanRunStatus,
    error: AgentRunnerError | None,
    spend: Spend | None,
    current: PlanRun,
    *,
    result: str | None = None,
    result_json: Any = None,
) -> Change:
    """`current` ended in `status` (with what the coordinator spent); a run that already
    ended is left as it is."""
    if current.status.is_terminal:
        return current, []
    return ended(
        spent(current, spend) if spend else current, status, result=result, error=error, result_json=result_json
    )


def spent(run: PlanRun, spend: Spend) -> PlanRun:
    return run.model_copy(update={"usage": run.usage + spend.usage, "cost_usd": add_cost(run.cost_usd, spend.cost_usd)})


def cancelled_error(execution: Execution) -> AgentRunnerError:
    message = execution.error.message if execution.error else f"its execution ended {execution.status.value}"
    return AgentRunnerError(f"plan run stopped: {message}")


def step_task(run: PlanRun, step: StepRun, allow: bool) -> dict[str, Any]:
    """What a step's agent receives: its instruction, the run's task, its inputs' outputs,
    its earlier questions and their answers, and a read-only copy of the shared state."""
    assert run.plan is not None
    planned = run.plan.step(step.step_id)
    parts = [planned.instruction, f"This step is part of a larger task:\n{user_prompt(run.task)}"]
    for source in [*planned.inputs, *(d for d in planned.depends_on if d not in planned.inputs)]:
        if source in run.state:
            parts.append(f"Output of step {source!r}:\n{run.state[source]}")
    for question in run.clarifications:
        if question.step_id == step.step_id and question.answer is not None:
            parts.append(f"You asked a human: {question.question}\nTheir answer: {question.answer}")
    context = {
        "run_id": run.id,
        "step_id": step.step_id,
        "allow_clarification": allow,
        "inputs": {source: run.state.get(source) for source in planned.inputs},
        "shared_state": run.state,
    }
    return {"prompt": "\n\n".join(parts), COLLABORATION_KEY: context}
