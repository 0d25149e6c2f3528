"""The retention purge in SQL: a function that runs inside the caller's transaction, and
`RetentionSQL`, the `Retention` methods that open those transactions on the shared engine
(`engine.py`, which translates driver errors).

A batch is one short transaction: pick at most `limit` ended rows older than the window,
oldest first, `FOR UPDATE SKIP LOCKED` on PostgreSQL (a second purger takes other rows
and never waits on these; SQLite has one writer and no such clause), then delete them by
key. An execution's journal of steps goes with it in that transaction; its usage does not:
the usage buckets counted it when it ended and keep it (usage_sql.py, migration 0020), so
`/usage` and the budgets count it the same before and after the purge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, delete, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from agentrunner.adapters.state.engine import SQLEngine
from agentrunner.adapters.state.tables import (
    DeadLetterRow,
    EvalRunRow,
    ExecutionRow,
    ExecutionStepRow,
    IdempotencyKeyRow,
    OutboxRow,
    PlanRunRow,
    ScheduleFireRow,
    WebhookDeliveryRow,
)
from agentrunner.domain.errors import BadRequestError
from agentrunner.domain.eval_run import EvalRunStatus
from agentrunner.domain.execution import ExecutionStatus
from agentrunner.domain.plan import PlanRunStatus
from agentrunner.domain.schedule import FireStatus
from agentrunner.ports.retention import PurgeKind

EXECUTIONS = cast("Table", ExecutionRow.__table__)
STEPS = cast("Table", ExecutionStepRow.__table__)

# One key for the whole deployment's purge lease (pg_try_advisory_lock); advisory locks are
# per database, so deployments on one server do not meet. "agentrun" in ASCII.
PURGE_LOCK_KEY = 0x6167656E7472756E

TERMINAL_EXECUTIONS = [status.value for status in ExecutionStatus if status.is_terminal]
TERMINAL_RUNS = [status.value for status in PlanRunStatus if status.is_terminal]


@dataclass(frozen=True)
class _Kind:
    table: Table
    key: Any  # the primary key column
    age: Any  # the column the window applies to, indexed
    ended: Callable[[], ColumnElement[bool]]  # rows that may go; the rest are still in use


def _table(row: type) -> Table:
    return cast("Table", row.__table__)  # type: ignore[attr-defined]


KINDS: dict[PurgeKind, _Kind] = {
    PurgeKind.EXECUTIONS: _Kind(
        EXECUTIONS,
        ExecutionRow.execution_id,
        ExecutionRow.created_at,
        lambda: ExecutionRow.status.in_(TERMINAL_EXECUTIONS),
    ),
    PurgeKind.PLAN_RUNS: _Kind(
        _table(PlanRunRow), PlanRunRow.id, PlanRunRow.created_at, lambda: PlanRunRow.status.in_(TERMINAL_RUNS)
    ),
    # published_at < before holds only for published entries: no condition of its own.
    PurgeKind.OUTBOX: _Kind(_table(OutboxRow), OutboxRow.id, OutboxRow.published_at, true),
    PurgeKind.FIRES: _Kind(
        _table(ScheduleFireRow),
        ScheduleFireRow.id,
        ScheduleFireRow.fired_at,
        lambda: ScheduleFireRow.status != FireStatus.PENDING.value,
    ),
    PurgeKind.DEAD_LETTERS: _Kind(_table(DeadLetterRow), DeadLetterRow.id, DeadLetterRow.created_at, true),
    PurgeKind.WEBHOOK_DELIVERIES: _Kind(
        _table(WebhookDeliveryRow),
        WebhookDeliveryRow.execution_id,
        WebhookDeliveryRow.created_at,
        lambda: or_(WebhookDeliveryRow.delivered_at.is_not(None), WebhookDeliveryRow.gave_up_at.is_not(None)),
    ),
    PurgeKind.EVAL_RUNS: _Kind(
        _table(EvalRunRow),
        EvalRunRow.run_id,
        EvalRunRow.created_at,
        lambda: EvalRunRow.status != EvalRunStatus.RUNNING.value,
    ),
    PurgeKind.IDEMPOTENCY_KEYS: _Kind(
        _table(IdempotencyKeyRow), IdempotencyKeyRow.key, IdempotencyKeyRow.created_at, true
    ),
}


async def purge(session: AsyncConnection, kind: PurgeKind, *, before: datetime, limit: int) -> int:
    """Delete at most `limit` ended rows of `kind` older than `before`, in the caller's
    transaction; how many were deleted."""
    spec = KINDS[kind]
    doomed = (
        select(spec.key)
        .where(spec.age < before, spec.ended())
        .order_by(spec.age)
        .limit(limit)
        .with_for_update(skip_locked=True)  # rendered on PostgreSQL only
    )
    keys = list((await session.execute(doomed)).scalars())
    if not keys:
        return 0
    # What the DELETE returns, not what the SELECT saw: on SQLite another purger may have
    # deleted some of them in between (no row locks there), and those must not count twice.
    removal = delete(spec.table).where(spec.key.in_(keys))
    if kind is not PurgeKind.EXECUTIONS:
        return len((await session.execute(removal.returning(spec.key))).all())
    gone = list((await session.execute(removal.returning(EXECUTIONS.c.execution_id))).scalars())
    if gone:
        # An execution's journal goes with it, in the same transaction; its usage stays in
        # the buckets (usage_sql.py): usage history outlives the rows.
        await session.execute(delete(STEPS).where(STEPS.c.execution_id.in_(gone)))
    return len(gone)


class RetentionSQL(SQLEngine):
    """`Retention` over the shared engine (the purge talks to the database itself, never
    through a cache)."""

    @asynccontextmanager
    async def purge_lease(self) -> AsyncIterator[bool]:
        if self.is_sqlite:  # the embedded store belongs to one process
            yield True
            return
        # A session lock on a connection held for the pass: freed by the unlock, or by
        # PostgreSQL when the process (and so the connection) dies.
        async with self._session() as session:
            lock = PURGE_LOCK_KEY
            held = bool((await session.execute(select(func.pg_try_advisory_lock(lock)))).scalar())
            try:
                yield held
            finally:
                if held:
                    await session.execute(select(func.pg_advisory_unlock(lock)))

    async def purge(self, kind: PurgeKind, *, before: datetime, limit: int) -> int:
        if limit < 1:
            raise BadRequestError(f"limit must be at least 1, got {limit}")
        async with self._session(write=True, atomic=True) as session:
            return await purge(session, kind, before=before, limit=limit)
