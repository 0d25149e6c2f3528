"""Eval runs in SQL (`domain/eval_run.py`): a row per run, its record rewritten as cases end."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.tables import EvalRunRow
from agentrunner.domain.errors import ConflictError, EvalRunNotFoundError
from agentrunner.domain.eval_run import EvalRun, EvalRunStatus

RUNS = cast("Table", EvalRunRow.__table__)


def _row(run: EvalRun) -> dict[str, Any]:
    return {
        "suite": run.suite,
        "agent": run.agent,
        "agent_version": run.agent_version,
        "tenant": run.tenant,
        "status": run.status.value,
        # The computed summary is derived again on read: only the fields are kept.
        "record": run.model_dump(mode="json", exclude=set(EvalRun.model_computed_fields)),
        "created_at": run.created_at,
        "finished_at": run.finished_at,
    }


def _not_found(run_id: str) -> EvalRunNotFoundError:
    return EvalRunNotFoundError(f"no eval run {run_id!r} (POST /evals/runs starts one)", run_id=run_id)


class EvalRunsSQL(SQLEngine):
    """`EvalRuns` over the shared engine."""

    async def create_eval_run(self, run: EvalRun) -> None:
        try:
            async with self._session(write=True) as session:
                await session.execute(insert(RUNS), {"run_id": run.run_id, **_row(run)})
        except IntegrityError as exc:
            raise ConflictError(f"eval run {run.run_id} already exists", run_id=run.run_id) from exc

    @idempotent  # the whole record is written: twice is once
    async def save_eval_run(self, run: EvalRun) -> None:
        async with self._session(write=True) as session:
            result = await session.execute(update(RUNS).where(RUNS.c.run_id == run.run_id).values(**_row(run)))
        if result.rowcount == 0:
            raise _not_found(run.run_id)

    @idempotent
    async def get_eval_run(self, run_id: str) -> EvalRun:
        async with self._session() as session:
            record = (await session.execute(select(RUNS.c.record).where(RUNS.c.run_id == run_id))).scalar()
        if record is None:
            raise _not_found(run_id)
        return EvalRun.model_validate(record)

    @idempotent
    async def list_eval_runs(
        self,
        *,
        suite: str | None,
        tenant: str | None,
        limit: int = 20,
        statuses: Collection[EvalRunStatus] | None = None,
    ) -> list[EvalRun]:
        query = select(RUNS.c.record)
        if suite is not None:
            query = query.where(RUNS.c.suite == suite)
        if tenant is not None:
            query = query.where(RUNS.c.tenant == tenant)
        if statuses is not None:
            query = query.where(RUNS.c.status.in_(sorted(status.value for status in statuses)))
        query = query.order_by(RUNS.c.created_at.desc(), RUNS.c.run_id.desc()).limit(limit)
        async with self._session() as session:
            records = (await session.execute(query)).scalars().all()
        return [EvalRun.model_validate(record) for record in records]

    @idempotent
    async def latest_eval_run(
        self, suite: str, *, tenant: str | None, agent_version: int | None = None, finished_only: bool = True
    ) -> EvalRun | None:
        query = select(RUNS.c.record).where(RUNS.c.suite == suite)
        if tenant is not None:
            query = query.where(RUNS.c.tenant == tenant)
        if agent_version is not None:
            query = query.where(RUNS.c.agent_version == agent_version)
        if finished_only:
            query = query.where(RUNS.c.status != EvalRunStatus.RUNNING.value)
        query = query.order_by(RUNS.c.created_at.desc(), RUNS.c.run_id.desc()).limit(1)
        async with self._session() as session:
            record = (await session.execute(query)).scalar()
        return EvalRun.model_validate(record) if record is not None else None
