"""What people do to plan runs, wherever they come from (the API, a Slack button through
the bus, the clarification timeout): read them, approve or reject a plan, answer a
question; and how a run ends (its execution finished, `collaboration.completed` published).

Every change is a read-modify-write over the run's version (`PlanRunStore.save_plan_run`),
tried again on a conflict with what changed meanwhile, so the collaborative worker that
drives a run and a person answering it never overwrite each other.

A run belongs to the tenant of the execution that started it: a caller reads, lists,
approves, rejects and answers its own runs (an admin every one); another tenant's run is
answered as a missing one (ARCHITECTURE §10).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from agentrunner.domain.errors import (
    AgentRunnerError,
    BadRequestError,
    ClarificationNotFoundError,
    ClarificationTimedOutError,
    ConflictError,
    ExecutionCancelledError,
    ExecutionNotFoundError,
    PlanRejectedError,
    PlanRunNotFoundError,
)
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionError, ExecutionStatus, Usage, utcnow
from agentrunner.domain.plan import (
    STEP_PAUSES,
    Clarification,
    ClarificationStatus,
    Plan,
    PlanRun,
    PlanRunStatus,
    StepRun,
    StepStatus,
    WaitingStep,
    checked_answer,
    parse_plan,
)
from agentrunner.logs import get_logger
from agentrunner.ports.state import ExecutionStore, PlanRunStore
from agentrunner.runtime.chains import output_event
from agentrunner.runtime.outbox import OutboxRelay
from agentrunner.runtime.ownership import owned
from agentrunner.runtime.planner import participants
from agentrunner.runtime.registry import AgentRegistry
from agentrunner.runtime.topics import completed_topic, finished_topic, invoke_topic
from agentrunner.tracing import visible_tenant

log = get_logger(__name__)

Change = tuple[PlanRun, list[Event]]
Mutation = Callable[[PlanRun], Change]
_CONFLICT_RETRIES = 20
# Steps whose execution may wait before a tool call: one seen waiting, and one still seen
# running (the collaborative worker notices a pause within its poll).
_MAY_WAIT = frozenset({StepStatus.WAITING_APPROVAL, StepStatus.RUNNING})


def resume_event(run: PlanRun) -> Event:
    """The request that makes a collaborative worker drive `run` again."""
    return Event(topic=invoke_topic(run.agent), payload={"execution_id": run.id, "resume": True}, trace_id=run.trace_id)


def planned_steps(plan: Plan, registry: AgentRegistry, earlier: Sequence[StepRun] = ()) -> list[StepRun]:
    """The step records of `plan`, each pinned to a version of its agent: the one `earlier`
    records of the run have for it (an edited plan keeps the team's versions of the plan it
    replaces), else the version loaded now."""
    pinned = {step.agent: step.agent_version for step in earlier if step.agent_version is not None}
    return [
        StepRun(
            step_id=step.id, agent=step.agent, agent_version=pinned.get(step.agent, registry.version_of(step.agent))
        )
        for step in plan.steps
    ]


def step_version(step: StepRun, registry: AgentRegistry) -> int | None:
    """The version a step's execution is created on: the one pinned when its plan was
    made; for a step recorded without one (planned before versions), the one loaded now."""
    return step.agent_version if step.agent_version is not None else registry.version_of(step.agent)


def ended(
    run: PlanRun,
    status: PlanRunStatus,
    *,
    result: str | None = None,
    error: AgentRunnerError | None = None,
    result_json: Any = None,
) -> Change:
    """`run` ended in `status` (with its result, parsed too when it followed an
    `output_schema`), with its completion announced."""
    now = utcnow()
    finished = run.model_copy(
        update={
            "status": status,
            "result": result,
            "result_json": result_json,
            "error": ExecutionError(code=error.code, message=error.message) if error else None,
            "finished_at": now,
        }
    )
    announced = Event(
        topic=completed_topic(run.id),
        payload={
            "run_id": run.id,
            "agent": run.agent,
            "status": status.value,
            "result": result,
            "error": finished.error.model_dump() if finished.error else None,
        },
        trace_id=run.trace_id,
    )
    return finished, [announced]


class PlanRuns:
    """Reads and changes plan runs (see the module docstring)."""

    def __init__(
        self, *, executions: ExecutionStore, runs: PlanRunStore, relay: OutboxRelay, registry: AgentRegistry
    ) -> None:
        self._executions = executions
        self._runs = runs
        self._relay = relay
        self._registry = registry

    @property
    def store(self) -> PlanRunStore:
        """Where runs are kept."""
        return self._runs

    @property
    def registry(self) -> AgentRegistry:
        """The agents runs are planned over."""
        return self._registry

    async def get(self, run_id: str) -> PlanRun:
        """The caller's run (raises `PlanRunNotFoundError`, also for another tenant's)."""
        run = await self._runs.get_plan_run(run_id)
        return owned(run, run.tenant, lambda: _no_run(run_id))

    async def list(
        self, *, agent: str | None = None, status: PlanRunStatus | None = None, limit: int = 50
    ) -> list[PlanRun]:
        """The caller's runs matching the filters, newest first."""
        return await self._runs.list_plan_runs(agent=agent, status=status, limit=limit, tenant=visible_tenant())

    async def update(self, run: PlanRun, mutate: Mutation) -> PlanRun:
        """Apply `mutate` to `run` and save it with its events; on a conflict, apply it
        again to the run as stored now. `mutate` may raise to refuse the change. Events
        are published once saved. Returns the run as saved."""
        for _ in range(_CONFLICT_RETRIES):
            changed, events = mutate(run)
            try:
                saved = await self._runs.save_plan_run(changed, events=events)
            except ConflictError:
                run = await self._runs.get_plan_run(run.id)
                continue
            await self._relay.deliver(events)
            if saved.status.is_terminal:
                await self.finish_execution(saved)
            return saved
        raise ConflictError(f"plan run {run.id} keeps changing: try again", run_id=run.id)

    async def finish_execution(self, run: PlanRun) -> None:
        """End the execution that started `run` as the run ended (a no-op when it already
        has), announcing it as every execution is: `execution.finished.<agent>`, and
        `agent.output.<agent>` on success. The executions of its steps still waiting before a
        tool call are cancelled first: no answer may make their call any more."""
        await self._cancel_waiting_steps(run)
        execution = await self._executions.get_execution(run.id)
        if execution.status.is_terminal:
            return
        status = {
            PlanRunStatus.SUCCEEDED: ExecutionStatus.SUCCEEDED,
            PlanRunStatus.REJECTED: ExecutionStatus.CANCELLED,
            PlanRunStatus.CANCELLED: ExecutionStatus.CANCELLED,
        }.get(run.status, ExecutionStatus.FAILED)
        finished = execution.model_copy(
            update={
                "status": status,
                "output": run.result,
                "output_json": run.result_json,  # chains and webhooks get it parsed
                "error": run.error,
                # The coordinator's own model calls (planning, synthesis): each step is an
                # execution of its own, counted once for the tenant and its agent (the
                # run's total is the plan run's usage and cost).
                **_own_spend(run),
                "finished_at": run.finished_at or utcnow(),
            }
        )
        events = [
            Event(
                topic=finished_topic(run.agent),
                payload={
                    "execution_id": run.id,
                    "status": status.value,
                    "plan_run_id": run.id,
                    "execution": finished.model_dump(mode="json"),
                },
                trace_id=run.trace_id,
            )
        ]
        if status is ExecutionStatus.SUCCEEDED:
            events.append(output_event(finished))
        try:
            await self._executions.save_execution(
                finished, events=events, only_if=frozenset({ExecutionStatus.QUEUED, ExecutionStatus.RUNNING})
            )
        except ConflictError:
            return  # ended meanwhile (cancelled): left as it is
        await self._relay.deliver(events)
        log.info("plan run ended", run_id=run.id, agent=run.agent, status=run.status.value)

    async def waiting_steps(self, run: PlanRun) -> Sequence[WaitingStep]:
        """The steps of `run` whose execution waits for a human before a tool call, each
        with that call, as their executions stand (one the run still shows running may
        wait already)."""
        candidates = [step for step in run.steps if step.execution_id and step.status in _MAY_WAIT]
        executions = await asyncio.gather(*(self._step_execution(step) for step in candidates))
        return [
            WaitingStep(
                step_id=step.step_id,
                agent=step.agent,
                execution_id=execution.execution_id,
                pending_tool_call=execution.pending_tool_call,
            )
            for step, execution in zip(candidates, executions, strict=True)
            if execution is not None
            and execution.status is ExecutionStatus.WAITING_APPROVAL
            and execution.pending_tool_call is not None
        ]

    async def _step_execution(self, step: StepRun) -> Execution | None:
        assert step.execution_id is not None
        with contextlib.suppress(ExecutionNotFoundError):  # not created yet
            return await self._executions.get_execution(step.execution_id)
        return None

    async def resume_answered(self, run: PlanRun) -> PlanRun:
        """Put back to running the steps of `run` whose execution no longer waits before a
        tool call (a human answered it, or it was cancelled), and resume the run if they
        had paused it: its worker is asked to drive it, and reads their outcome. Returns
        the run as it stands."""
        waiting = {step.step_id for step in run.steps if step.status is StepStatus.WAITING_APPROVAL}
        if not waiting or run.status.is_terminal:
            return run
        moved = waiting - {step.step_id for step in await self.waiting_steps(run)}
        if not moved:
            return run

        def resumed(current: PlanRun) -> Change:
            steps = [
                step.model_copy(update={"status": StepStatus.RUNNING})
                if step.step_id in moved and step.status is StepStatus.WAITING_APPROVAL
                else step
                for step in current.steps
            ]
            if current.status.is_terminal or steps == current.steps:
                return current, []
            changed = current.model_copy(update={"steps": steps})
            if current.status in STEP_PAUSES:
                changed = changed.model_copy(update={"status": PlanRunStatus.RUNNING})
                return changed, [resume_event(changed)]
            return changed, []  # its worker drives it: it sees them running at its next look

        saved = await self.update(run, resumed)
        log.info("steps answered, plan run goes on", run_id=run.id, steps=sorted(moved))
        return saved

    async def resume_step_of(self, run_id: str, execution_id: str) -> None:
        """Resume run `run_id` at once if one of its steps waits on `execution_id`, which no
        longer waits (its call was answered, and it ended): the quick way, on its
        `execution.finished`; the collaborative pool's sweep is the sure one. Anything
        else (no such run, no such step) is left as it is: the step is matched by the
        execution id the pool gave it, so a run id named in any other execution's input
        changes nothing."""
        try:
            run = await self._runs.get_plan_run(run_id)
        except PlanRunNotFoundError:
            return
        if any(s.execution_id == execution_id and s.status is StepStatus.WAITING_APPROVAL for s in run.steps):
            await self.resume_answered(run)

    async def _cancel_waiting_steps(self, run: PlanRun) -> None:
        """Cancel the executions of `run`'s steps that wait before a tool call: the run has
        ended, so no answer may make their call any more."""
        for waiting in await self.waiting_steps(run):
            execution = await self._executions.get_execution(waiting.execution_id)
            reason = f"cancelled: its plan run {run.id} ended ({run.status.value}) while it waited before a tool call"
            cancelled = execution.model_copy(
                update={
                    "status": ExecutionStatus.CANCELLED,
                    "finished_at": utcnow(),
                    "error": ExecutionError(code=ExecutionCancelledError.code, message=reason),
                }
            )
            finished = Event(
                topic=finished_topic(execution.agent),
                payload={"execution_id": execution.execution_id, "status": ExecutionStatus.CANCELLED.value},
                trace_id=execution.trace_id,
            )
            try:
                await self._executions.save_execution(
                    cancelled, events=[finished], only_if=frozenset({ExecutionStatus.WAITING_APPROVAL})
                )
            except ConflictError:
                continue  # answered or cancelled meanwhile: it runs, or ran, to its end
            await self._relay.deliver([finished])
            log.info("waiting step cancelled with its plan run", run_id=run.id, execution_id=execution.execution_id)

    async def approve(self, run_id: str, plan: dict[str, Any] | None = None) -> PlanRun:
        """Let a run held for approval go on, with its plan or an edited one (validated as
        the planner's is: `PlanInvalidError`). `ConflictError` when it is not held."""
        run = await self.get(run_id)
        config = self._registry.get(run.agent).config
        edited = None
        if plan is not None:
            max_steps = config.collaborative_config.max_plan_steps if config and config.collaborative_config else 10
            agents = {p.name for p in participants(config, self._registry)} if config else set()
            edited = parse_plan(plan, agents=agents, max_steps=max_steps)

        def approved(current: PlanRun) -> Change:
            _require(current, PlanRunStatus.AWAITING_APPROVAL, "approve")
            changes: dict[str, Any] = {"status": PlanRunStatus.RUNNING}
            if edited is not None:
                changes |= {"plan": edited, "steps": planned_steps(edited, self._registry, current.steps)}
            changed = current.model_copy(update=changes)
            return changed, [resume_event(changed)]

        saved = await self.update(run, approved)
        log.info("plan approved", run_id=run_id, edited=edited is not None)
        return saved

    async def reject(self, run_id: str, reason: str | None = None) -> PlanRun:
        """Stop a run held for approval: rejected, its execution cancelled."""
        run = await self.get(run_id)

        def rejected(current: PlanRun) -> Change:
            _require(current, PlanRunStatus.AWAITING_APPROVAL, "reject")
            why = f"the plan was rejected{': ' + reason if reason else ''}"
            return ended(current, PlanRunStatus.REJECTED, error=PlanRejectedError(why))

        return await self.update(run, rejected)

    async def answer(self, run_id: str, clarification_id: str, answer: str, *, answered_by: str | None) -> PlanRun:
        """Answer a run's question: the step that asked runs again with the answer, and a
        run paused for it resumes. A second answer is a `ConflictError`; an answer that
        does not fit the question (a choice not offered) a `BadRequestError`."""
        run = await self.get(run_id)

        def answered(current: PlanRun) -> Change:
            question = current.clarification(clarification_id)
            if question is None:
                raise ClarificationNotFoundError(
                    f"plan run {run_id} has no clarification {clarification_id}", run_id=run_id
                )
            if question.status is not ClarificationStatus.PENDING:
                raise ConflictError(
                    f"clarification {clarification_id} is already {question.status.value}: it takes one answer",
                    run_id=run_id,
                )
            if current.status.is_terminal:
                raise ConflictError(f"plan run {run_id} already ended ({current.status.value})", run_id=run_id)
            try:
                value = checked_answer(question, answer)
            except ValueError as exc:
                raise BadRequestError(f"clarification {clarification_id}: {exc}") from exc
            return _with_answer(current, question, value, answered_by, ClarificationStatus.ANSWERED)

        saved = await self.update(run, answered)
        log.info("clarification answered", run_id=run_id, clarification_id=clarification_id)
        return saved

    async def expire(self, run: PlanRun) -> PlanRun:
        """Settle the questions of `run` unanswered past their time: the declared default
        is taken, else the run fails with the reason. Returns the run as it stands."""

        def settled(current: PlanRun) -> Change:
            now = utcnow()
            late = [
                c
                for c in current.clarifications
                if c.status is ClarificationStatus.PENDING and c.expires_at is not None and c.expires_at <= now
            ]
            if not late or current.status.is_terminal:
                return current, []
            question = late[0]
            if question.default is not None:
                return _with_answer(current, question, question.default, "default", ClarificationStatus.DEFAULTED)
            waited = (question.expires_at - question.asked_at) if question.expires_at else timedelta()
            expired = question.model_copy(update={"status": ClarificationStatus.EXPIRED})
            failed_step = _step(current, question.step_id).model_copy(
                update={"status": StepStatus.FAILED, "finished_at": now}
            )
            current = _replace(current, clarification=expired, step=failed_step)
            reason = (
                f"clarification {question.id} of step {question.step_id!r} ({question.question!r}) was not answered "
                f"within {waited.total_seconds():g} s (clarification_timeout_seconds) and has no default"
            )
            return ended(current, PlanRunStatus.FAILED, error=ClarificationTimedOutError(reason))

        return await self.update(run, settled)


def _with_answer(
    run: PlanRun, question: Clarification, value: str, answered_by: str | None, status: ClarificationStatus
) -> Change:
    """`run` with `question` answered and its step ready to run again; a run paused for
    it resumes (its worker is asked to drive it)."""
    answered = question.model_copy(
        update={"answer": value, "answered_by": answered_by, "status": status, "answered_at": utcnow()}
    )
    step = _step(run, question.step_id).model_copy(update={"status": StepStatus.PENDING})
    changed = _replace(run, clarification=answered, step=step)
    if run.status in STEP_PAUSES:  # also one paused on another step's tool call: this step can run
        changed = changed.model_copy(update={"status": PlanRunStatus.RUNNING})
        return changed, [resume_event(changed)]
    return changed, []


def _step(run: PlanRun, step_id: str) -> StepRun:
    step = run.step_run(step_id)
    if step is None:
        raise ConflictError(f"plan run {run.id} has no step {step_id!r}", run_id=run.id)
    return step


def _replace(run: PlanRun, *, clarification: Clarification | None = None, step: StepRun | None = None) -> PlanRun:
    changes: dict[str, Any] = {}
    if clarification is not None:
        changes["clarifications"] = [clarification if c.id == clarification.id else c for c in run.clarifications]
    if step is not None:
        changes["steps"] = [step if s.step_id == step.step_id else s for s in run.steps]
    return run.model_copy(update=changes)


def _require(run: PlanRun, status: PlanRunStatus, action: str) -> None:
    if run.status is not status:
        raise ConflictError(
            f"plan run {run.id} is {run.status.value}, not {status.value}: nothing to {action}", run_id=run.id
        )


def _no_run(run_id: str) -> PlanRunNotFoundError:
    return PlanRunNotFoundError(f"plan run {run_id} not found: GET /plan-runs lists them", run_id=run_id)


def _own_spend(run: PlanRun) -> dict[str, Any]:
    """The usage and cost of the run's coordinator alone: the run's minus its steps'."""
    steps_in = sum(step.usage.input_tokens for step in run.steps)
    steps_out = sum(step.usage.output_tokens for step in run.steps)
    usage = Usage(
        input_tokens=max(0, run.usage.input_tokens - steps_in),
        output_tokens=max(0, run.usage.output_tokens - steps_out),
    )
    if run.cost_usd is None:
        return {"usage": usage, "cost_usd": None}
    steps_cost = sum(step.cost_usd or 0.0 for step in run.steps)
    return {"usage": usage, "cost_usd": max(0.0, round(run.cost_usd - steps_cost, 9))}
