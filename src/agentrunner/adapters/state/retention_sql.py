"""The retention purge and the usage rollup in SQL: functions that run inside the caller's
transaction, and `RetentionSQL`, the `Retention` methods that open those transactions on
the shared engine (`engine.py`, which translates driver errors).

A batch is one short transaction: pick at most `limit` ended rows older than the window,
oldest first, `FOR UPDATE SKIP LOCKED` on PostgreSQL (a second purger takes other rows
and never waits on these; SQLite has one writer and no such clause), then delete them by
key. Executions first add their usage to `usage_rollup`, in the same transaction, so a
reader sees an execution either live or rolled up, never both and never neither; their
journal of steps goes with them in that transaction too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, and_, case, delete, func, or_, select, true, union_all
from sqlalchemy.dialects import postgresql, sqlite
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
    UsageRollupRow,
    WebhookDeliveryRow,
)
from agentrunner.domain.errors import BadRequestError
from agentrunner.domain.eval_run import EvalRunStatus
from agentrunner.domain.execution import ExecutionStatus
from agentrunner.domain.plan import PlanRunStatus
from agentrunner.domain.schedule import FireStatus
from agentrunner.domain.state import AgentUsage
from agentrunner.ports.retention import PurgeKind

EXECUTIONS = cast("Table", ExecutionRow.__table__)
ROLLUP = cast("Table", UsageRollupRow.__table__)
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


# What the rollup needs of each execution deleted.
_USAGE_COLUMNS = [
    EXECUTIONS.c.agent,
    EXECUTIONS.c.tenant,
    EXECUTIONS.c.created_at,
    EXECUTIONS.c.input_tokens,
    EXECUTIONS.c.output_tokens,
    EXECUTIONS.c.cost_usd,
]


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
    gone = await session.execute(removal.returning(EXECUTIONS.c.execution_id, *_USAGE_COLUMNS))
    rows = list(gone.all())
    if rows:
        # An execution's journal goes with it, in the same transaction.
        await session.execute(delete(STEPS).where(STEPS.c.execution_id.in_([row[0] for row in rows])))
        await _roll_up(session, [row[1:] for row in rows])
    return len(rows)


async def _roll_up(session: AsyncConnection, rows: list[Any]) -> None:
    """Add the usage of `rows` (executions this transaction deleted) to their hours' rollup rows."""
    sums: dict[tuple[str, str, datetime], list[Any]] = defaultdict(lambda: [0, 0, 0, None])
    for agent, tenant, created_at, tokens_in, tokens_out, cost in rows:
        total = sums[(agent, tenant or "", created_at.replace(minute=0, second=0, microsecond=0))]
        total[0] += 1
        total[1] += tokens_in or 0
        total[2] += tokens_out or 0
        if cost is not None:
            total[3] = (total[3] or 0.0) + cost
    # In key order: two purgers that meet on the same hours lock them in the same order.
    values = [
        {"agent": a, "tenant": t, "hour": h, "executions": n, "input_tokens": i, "output_tokens": o, "cost_usd": c}
        for (a, t, h), (n, i, o, c) in sorted(sums.items())
    ]
    dialect = postgresql if session.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(ROLLUP)
    new = statement.excluded
    both_unknown = and_(ROLLUP.c.cost_usd.is_(None), new.cost_usd.is_(None))
    upsert = statement.on_conflict_do_update(
        index_elements=[ROLLUP.c.agent, ROLLUP.c.tenant, ROLLUP.c.hour],
        set_={
            "executions": ROLLUP.c.executions + new.executions,
            "input_tokens": ROLLUP.c.input_tokens + new.input_tokens,
            "output_tokens": ROLLUP.c.output_tokens + new.output_tokens,
            "cost_usd": case(
                (both_unknown, None), else_=func.coalesce(ROLLUP.c.cost_usd, 0.0) + func.coalesce(new.cost_usd, 0.0)
            ),
        },
    )
    await session.execute(upsert, values)


def usage_query(
    *, agent: str | None, since: datetime | None, until: datetime | None, tenant: str | None
) -> Select[Any]:
    """One statement (one snapshot: a purge that commits meanwhile is seen whole or not at
    all) over live executions and the rollup: rows of (agent, executions, input tokens,
    output tokens, cost), up to two per agent. A rolled-up hour counts when its start lies
    in [since, until)."""
    live = select(
        ExecutionRow.agent.label("agent"),
        func.count().label("executions"),
        func.coalesce(func.sum(ExecutionRow.input_tokens), 0).label("input_tokens"),
        func.coalesce(func.sum(ExecutionRow.output_tokens), 0).label("output_tokens"),
        func.sum(ExecutionRow.cost_usd).label("cost_usd"),
    ).group_by(ExecutionRow.agent)
    rolled = select(
        ROLLUP.c.agent,
        func.sum(ROLLUP.c.executions),
        func.sum(ROLLUP.c.input_tokens),
        func.sum(ROLLUP.c.output_tokens),
        func.sum(ROLLUP.c.cost_usd),
    ).group_by(ROLLUP.c.agent)
    if agent:
        live, rolled = live.where(ExecutionRow.agent == agent), rolled.where(ROLLUP.c.agent == agent)
    if tenant:
        live, rolled = live.where(ExecutionRow.tenant == tenant), rolled.where(ROLLUP.c.tenant == tenant)
    if since:
        live, rolled = live.where(ExecutionRow.created_at >= since), rolled.where(ROLLUP.c.hour >= since)
    if until:
        live, rolled = live.where(ExecutionRow.created_at < until), rolled.where(ROLLUP.c.hour < until)
    return cast("Select[Any]", union_all(live, rolled))


def usage_by_agent(rows: list[Any]) -> list[AgentUsage]:
    """The rows of `usage_query` merged per agent, by name."""
    merged: dict[str, AgentUsage] = {}
    for name, count, tokens_in, tokens_out, cost in rows:
        earlier = merged.get(name)
        costs = [c for c in (cost, earlier.cost_usd if earlier else None) if c is not None]
        merged[name] = AgentUsage(
            agent=name,
            executions=int(count) + (earlier.executions if earlier else 0),
            input_tokens=int(tokens_in) + (earlier.input_tokens if earlier else 0),
            output_tokens=int(tokens_out) + (earlier.output_tokens if earlier else 0),
            # Rounded: the same spend summed live or rolled up differs in the last bits.
            cost_usd=round(sum(float(c) for c in costs), 8) if costs else None,
        )
    return [merged[name] for name in sorted(merged)]


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
