"""Collaborative plan runs, their steps and clarifications in SQL: functions that each run
on one connection inside the caller's transaction, and `PlanRunsSQL`, the `PlanRunStore`
methods that open those transactions on the shared engine (`engine.py`, which translates
driver errors).

A run is written whole (its row, every step row and every clarification row) and only
over the version the writer read, so two writers never both win: a resumed worker and a
late one, an answer and a timeout, two approvals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.schedule_sql import append_outbox
from agentrunner.adapters.state.tables import ClarificationRow, PlanRunRow, PlanStepRow
from agentrunner.domain.errors import ConflictError, PlanRunNotFoundError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import ExecutionError, Usage, utcnow
from agentrunner.domain.plan import Clarification, Plan, PlanRun, PlanRunStatus, StepRun

RUNS = cast("Table", PlanRunRow.__table__)
STEPS = cast("Table", PlanStepRow.__table__)
CLARIFICATIONS = cast("Table", ClarificationRow.__table__)


def _run_values(run: PlanRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "agent": run.agent,
        "status": run.status.value,
        "task": run.task,
        "plan": run.plan.model_dump(mode="json") if run.plan else None,
        "state": run.state,
        "origin": run.origin,
        "result": run.result,
        "result_json": run.result_json,
        "error": run.error.model_dump() if run.error else None,
        "input_tokens": run.usage.input_tokens,
        "output_tokens": run.usage.output_tokens,
        "cost_usd": run.cost_usd,
        "trace_id": run.trace_id,
        "tenant": run.tenant,
        "version": run.version,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "finished_at": run.finished_at,
    }


def _step_values(run_id: str, step: StepRun) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "step_id": step.step_id,
        "agent": step.agent,
        "agent_version": step.agent_version,
        "status": step.status.value,
        "execution_id": step.execution_id,
        "output": step.output,
        "error": step.error.model_dump() if step.error else None,
        "input_tokens": step.usage.input_tokens,
        "output_tokens": step.usage.output_tokens,
        "cost_usd": step.cost_usd,
        "attempts": step.attempts,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
    }


def _clarification_values(clarification: Clarification) -> dict[str, Any]:
    values = clarification.model_dump()
    values["kind"] = clarification.kind.value
    values["status"] = clarification.status.value
    return values


async def _write_children(session: AsyncConnection, run: PlanRun) -> None:
    """Replace the run's step and clarification rows with those of `run`."""
    await session.execute(delete(STEPS).where(STEPS.c.run_id == run.id))
    await session.execute(delete(CLARIFICATIONS).where(CLARIFICATIONS.c.run_id == run.id))
    if run.steps:
        await session.execute(insert(STEPS), [_step_values(run.id, step) for step in run.steps])
    if run.clarifications:
        await session.execute(insert(CLARIFICATIONS), [_clarification_values(c) for c in run.clarifications])


async def create_plan_run(session: AsyncConnection, run: PlanRun, events: Sequence[Event]) -> PlanRun:
    """Insert a new run at version 1 (a duplicate id raises IntegrityError)."""
    stored = run.model_copy(update={"version": 1})
    await session.execute(insert(RUNS).values(**_run_values(stored)))
    await _write_children(session, stored)
    await append_outbox(session, events)
    return stored


async def save_plan_run(session: AsyncConnection, run: PlanRun, events: Sequence[Event]) -> PlanRun:
    """Write `run` over the stored version `run.version` (else `ConflictError`, or
    `PlanRunNotFoundError`); returns it at the next version, `updated_at` now."""
    stored = run.model_copy(update={"version": run.version + 1, "updated_at": utcnow()})
    values = _run_values(stored)
    del values["id"], values["created_at"]
    changed = await session.execute(
        update(RUNS).where(RUNS.c.id == run.id, RUNS.c.version == run.version).values(**values)
    )
    if changed.rowcount != 1:
        current = await session.scalar(select(RUNS.c.version).where(RUNS.c.id == run.id))
        if current is None:
            raise PlanRunNotFoundError(f"plan run {run.id} not found", run_id=run.id)
        raise ConflictError(
            f"plan run {run.id} changed meanwhile (version {current}, not {run.version}): read it again",
            run_id=run.id,
        )
    await _write_children(session, stored)
    await append_outbox(session, events)
    return stored


async def get_plan_run(session: AsyncConnection, run_id: str) -> PlanRun:
    """The run with its steps and clarifications (raises `PlanRunNotFoundError`)."""
    runs = await _load(session, select(RUNS).where(RUNS.c.id == run_id))
    if not runs:
        raise PlanRunNotFoundError(f"plan run {run_id} not found: GET /plan-runs lists them", run_id=run_id)
    return runs[0]


async def list_plan_runs(
    session: AsyncConnection, *, agent: str | None, status: PlanRunStatus | None, limit: int, tenant: str | None = None
) -> list[PlanRun]:
    """Runs matching the filters (of `tenant` when given), newest first, with their steps
    and clarifications."""
    query = select(RUNS).order_by(RUNS.c.created_at.desc(), RUNS.c.id.desc()).limit(limit)
    if tenant is not None:
        query = query.where(RUNS.c.tenant == tenant)
    if agent is not None:
        query = query.where(RUNS.c.agent == agent)
    if status is not None:
        query = query.where(RUNS.c.status == status.value)
    return await _load(session, query)


async def _load(session: AsyncConnection, query: Any) -> list[PlanRun]:
    rows = (await session.execute(query)).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    steps: dict[str, list[StepRun]] = {run_id: [] for run_id in ids}
    for row in await session.execute(select(STEPS).where(STEPS.c.run_id.in_(ids))):
        steps[row.run_id].append(_step_from(row))
    questions: dict[str, list[Clarification]] = {run_id: [] for run_id in ids}
    clarification_rows = await session.execute(
        select(CLARIFICATIONS).where(CLARIFICATIONS.c.run_id.in_(ids)).order_by(CLARIFICATIONS.c.asked_at)
    )
    for row in clarification_rows:
        questions[row.run_id].append(Clarification.model_validate(row._asdict()))
    return [_run_from(row, steps[row.id], questions[row.id]) for row in rows]


def _run_from(row: Any, steps: list[StepRun], clarifications: list[Clarification]) -> PlanRun:
    plan = Plan.model_validate(row.plan) if row.plan else None
    order = {step.id: index for index, step in enumerate(plan.steps)} if plan else {}
    return PlanRun(
        id=row.id,
        agent=row.agent,
        task=row.task,
        status=PlanRunStatus(row.status),
        plan=plan,
        state=row.state or {},
        origin=row.origin,
        result=row.result,
        result_json=row.result_json,
        error=ExecutionError.model_validate(row.error) if row.error else None,
        usage=Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens),
        cost_usd=row.cost_usd,
        trace_id=row.trace_id,
        tenant=row.tenant,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        steps=sorted(steps, key=lambda step: (order.get(step.step_id, len(order)), step.step_id)),
        clarifications=clarifications,
    )


def _step_from(row: Any) -> StepRun:
    return StepRun(
        step_id=row.step_id,
        agent=row.agent,
        agent_version=row.agent_version,
        status=row.status,
        execution_id=row.execution_id,
        output=row.output,
        error=ExecutionError.model_validate(row.error) if row.error else None,
        usage=Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens),
        cost_usd=row.cost_usd,
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


class PlanRunsSQL(SQLEngine):
    """`PlanRunStore` over the shared engine: each method opens the transaction and runs
    this module's function of the same name in it."""

    async def create_plan_run(self, run: PlanRun, *, events: Sequence[Event] = ()) -> PlanRun:
        try:
            async with self._session(write=True, atomic=True) as session:
                return await create_plan_run(session, run, events)
        except IntegrityError as exc:
            raise ConflictError(f"plan run {run.id} already exists", run_id=run.id) from exc

    async def save_plan_run(self, run: PlanRun, *, events: Sequence[Event] = ()) -> PlanRun:
        async with self._session(write=True, atomic=True) as session:
            return await save_plan_run(session, run, events)

    @idempotent
    async def get_plan_run(self, run_id: str) -> PlanRun:
        async with self._session() as session:
            return await get_plan_run(session, run_id)

    @idempotent
    async def list_plan_runs(
        self,
        *,
        agent: str | None = None,
        status: PlanRunStatus | None = None,
        limit: int = 50,
        tenant: str | None = None,
    ) -> list[PlanRun]:
        async with self._session() as session:
            return await list_plan_runs(session, agent=agent, status=status, limit=limit, tenant=tenant)
