"""The journal of execution steps in SQL: each write an upsert by (execution, generation,
seq), the writes that come while one is in flight grouped into one transaction (the tool
calls of one answer start together; steps of other executions land together)."""

from __future__ import annotations

import functools
from typing import Any, cast

from sqlalchemy import Insert, Table, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.group_commit import GroupCommit
from agentrunner.adapters.state.tables import ExecutionStepRow
from agentrunner.domain.steps import JournalStepKind, JournalStepStatus, Step

STEPS = cast("Table", ExecutionStepRow.__table__)
STEP_KEY = ("execution_id", "generation", "seq")
STEP_COLUMNS = tuple(column.name for column in STEPS.columns)


class StepsSQL(SQLEngine):
    """`StepJournal` over the shared engine."""

    @functools.cached_property
    def _step_writes(self) -> GroupCommit[Step]:
        return GroupCommit(self._record_many)

    async def record_step(self, step: Step) -> None:
        await self._step_writes.submit(step)

    @idempotent  # an upsert by key: written twice, it is the same row
    async def _record_many(self, steps: list[Step]) -> list[BaseException | None]:
        # One statement, atomic on both (SQLite: the write's transaction; PostgreSQL: the rows
        # go as one multi-row INSERT), so no BEGIN/COMMIT round trips around it.
        rows = [step_params(step) for step in steps]
        if self.is_sqlite:
            await self._sqlite_write_many(step_upsert(True), rows)
            return [None] * len(steps)
        async with self._session(write=True) as session:
            await session.execute(step_upsert(self.is_sqlite), rows[0] if len(rows) == 1 else rows)
        return [None] * len(steps)

    @idempotent
    async def steps(self, execution_id: str) -> list[Step]:
        query = select(STEPS).where(STEPS.c.execution_id == execution_id).order_by(STEPS.c.generation, STEPS.c.seq)
        async with self._session() as session:
            rows = (await session.execute(query)).all()
        return [_step_from(row) for row in rows]


def step_params(step: Step) -> dict[str, Any]:
    return {
        "v_execution_id": step.execution_id,
        "v_generation": step.generation,
        "v_seq": step.seq,
        "v_kind": step.kind.value,
        "v_name": step.name,
        "v_status": step.status.value,
        "v_outcome": step.outcome,
        "v_replayed": step.replayed,
        "v_started_at": step.started_at,
        "v_finished_at": step.finished_at,
    }


@functools.cache
def step_upsert(is_sqlite: bool) -> Insert:
    """INSERT of a step, replacing the row of its key: built once per dialect (building a
    statement per call costs more than running it)."""
    dialect = sqlite if is_sqlite else postgresql
    statement = dialect.insert(STEPS).values({c: bindparam(f"v_{c}", type_=STEPS.c[c].type) for c in STEP_COLUMNS})
    changed = {c: statement.excluded[c] for c in STEP_COLUMNS if c not in STEP_KEY}
    return cast("Insert", statement.on_conflict_do_update(index_elements=[STEPS.c[c] for c in STEP_KEY], set_=changed))


def _step_from(row: Any) -> Step:
    return Step(
        execution_id=row.execution_id,
        generation=row.generation,
        seq=row.seq,
        kind=JournalStepKind(row.kind),
        name=row.name,
        status=JournalStepStatus(row.status),
        outcome=row.outcome or {},
        replayed=bool(row.replayed),
        started_at=row.started_at,
        finished_at=row.finished_at,
    )
