"""Schedules and their fires in SQL: functions that each run on one connection inside the
caller's transaction, and `SchedulesSQL`, the `ScheduleStore` methods that open those
transactions on the shared engine (`engine.py`, which translates driver errors)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.rows import execution_values
from agentrunner.adapters.state.tables import ExecutionRow, OutboxRow, ScheduleFireRow, ScheduleRow
from agentrunner.domain.errors import BadRequestError, ConflictError, ScheduleNotFoundError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionError, ExecutionStatus, utcnow
from agentrunner.domain.schedule import Activity, FireStatus, Schedule, ScheduleFire, ScheduleSource
from agentrunner.ports.state import FireClaim, UnfinishedFire

SCHEDULES = cast("Table", ScheduleRow.__table__)
FIRES = cast("Table", ScheduleFireRow.__table__)
EXECUTIONS = cast("Table", ExecutionRow.__table__)
OUTBOX = cast("Table", OutboxRow.__table__)

_UNFINISHED = [ExecutionStatus.QUEUED.value, ExecutionStatus.RUNNING.value]
# Rows per multi-row INSERT (SQLite allows 32,766 bound values per statement).
_CHUNK = 500


def schedule_values(schedule: Schedule) -> dict[str, Any]:
    """Column values of a schedules row."""
    return {
        "id": schedule.id,
        "agent": schedule.agent,
        "kind": schedule.kind,
        "cron": schedule.cron,
        "interval_seconds": schedule.interval_seconds,
        "timezone": schedule.timezone,
        "start_at": schedule.start_at,
        "jitter_seconds": schedule.jitter_seconds,
        "task_data": schedule.task_data,
        "timeout_seconds": schedule.timeout_seconds,
        "misfire_policy": schedule.misfire_policy.value,
        "misfire_grace_seconds": schedule.misfire_grace_seconds,
        "overlap_policy": schedule.overlap_policy.value,
        "paused": schedule.paused,
        "origin": schedule.source.value,
        "tenant": schedule.tenant,
        "created_at": schedule.created_at,
        "updated_at": schedule.updated_at,
    }


def _schedule_from(row: Any) -> Schedule:
    return Schedule(
        id=row.id,
        agent=row.agent,
        cron=row.cron,
        interval_seconds=row.interval_seconds,
        timezone=row.timezone,
        start_at=row.start_at,
        jitter_seconds=row.jitter_seconds,
        task_data=row.task_data,
        misfire_policy=row.misfire_policy,
        misfire_grace_seconds=row.misfire_grace_seconds,
        overlap_policy=row.overlap_policy,
        timeout_seconds=row.timeout_seconds,
        paused=row.paused,
        source=ScheduleSource(row.origin),
        tenant=row.tenant,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_fire_at=row.last_fire_at,
    )


def _schedules_query() -> Any:
    last = (
        select(FIRES.c.schedule_id, func.max(FIRES.c.scheduled_for).label("last_fire_at"))
        .group_by(FIRES.c.schedule_id)
        .subquery()
    )
    return (
        select(SCHEDULES, last.c.last_fire_at)
        .outerjoin(last, last.c.schedule_id == SCHEDULES.c.id)
        .order_by(SCHEDULES.c.id)
    )


async def list_schedules(
    session: AsyncConnection, *, agent: str | None = None, ids: Sequence[str] = (), tenant: str | None = None
) -> list[Schedule]:
    """Schedules by id (of `tenant` when given), each with the time of its latest claimed tick."""
    query = _schedules_query()
    if tenant is not None:
        query = query.where(SCHEDULES.c.tenant == tenant)
    if agent is not None:
        query = query.where(SCHEDULES.c.agent == agent)
    if ids:
        query = query.where(SCHEDULES.c.id.in_(list(ids)))
    rows = (await session.execute(query)).all()
    return [_schedule_from(row) for row in rows]


async def get_schedule(session: AsyncConnection, schedule_id: str) -> Schedule:
    """One schedule (raises `ScheduleNotFoundError`)."""
    found = await list_schedules(session, ids=[schedule_id])
    if not found:
        raise ScheduleNotFoundError(f"schedule {schedule_id!r} not found: GET /schedules lists them")
    return found[0]


async def sync_config_schedules(session: AsyncConnection, schedules: Sequence[Schedule]) -> None:
    """See `ScheduleStore.sync_config_schedules`."""
    stored = {
        schedule.id: schedule for schedule in await list_schedules(session) if schedule.source is ScheduleSource.CONFIG
    }
    wanted = {schedule.id: schedule for schedule in schedules}
    gone = sorted(set(stored) - set(wanted))
    if gone:
        await session.execute(delete(SCHEDULES).where(SCHEDULES.c.id.in_(gone)))
    for schedule_id, schedule in wanted.items():
        current = stored.get(schedule_id)
        if current is None:
            await insert_ignoring_duplicates(session, SCHEDULES, [schedule_values(schedule)])
        elif not current.same_definition(schedule):
            values = schedule_values(schedule)
            for kept in ("id", "paused", "created_at"):
                values.pop(kept)
            await session.execute(update(SCHEDULES).where(SCHEDULES.c.id == schedule_id).values(**values))


async def set_paused(session: AsyncConnection, schedule_id: str, paused: bool) -> None:
    """Pause or resume; `updated_at` moves only when the state changes."""
    result = await session.execute(
        update(SCHEDULES)
        .where(SCHEDULES.c.id == schedule_id, SCHEDULES.c.paused.is_not(paused))
        .values(paused=paused, updated_at=utcnow())
    )
    if result.rowcount == 0:
        await get_schedule(session, schedule_id)  # raises when it does not exist


async def schedules_version(session: AsyncConnection) -> str:
    """Count and latest change of the schedules table."""
    count, latest = (await session.execute(select(func.count(), func.max(SCHEDULES.c.updated_at)))).one()
    return f"{count}:{latest}"


async def schedule_activity(session: AsyncConnection, schedule_ids: Sequence[str]) -> dict[str, Activity]:
    """See `ScheduleStore.schedule_activity`."""
    if not schedule_ids:
        return {}
    ids = list(schedule_ids)
    running = set(
        (
            await session.execute(
                select(EXECUTIONS.c.schedule_id)
                .where(EXECUTIONS.c.status.in_(_UNFINISHED), EXECUTIONS.c.schedule_id.in_(ids))
                .distinct()
            )
        ).scalars()
    )
    pending = set(
        (
            await session.execute(
                select(FIRES.c.schedule_id)
                .where(FIRES.c.status == FireStatus.PENDING.value, FIRES.c.schedule_id.in_(ids))
                .distinct()
            )
        ).scalars()
    )
    return {sid: Activity(running=sid in running, pending=sid in pending) for sid in running | pending}


def _fire_values(fire: ScheduleFire) -> dict[str, Any]:
    return {
        "id": fire.id,
        "schedule_id": fire.schedule_id,
        "agent": fire.agent,
        "scheduled_for": fire.fire_time,
        "fired_at": fire.fired_at,
        "status": fire.status.value,
        "note": fire.note,
        "execution_id": fire.execution_id,
    }


async def claim_fires(session: AsyncConnection, claims: Sequence[FireClaim]) -> list[ScheduleFire]:
    """See `ScheduleStore.claim_fires`. Claims are inserted in (schedule, time) order, so two
    replicas claiming the same ticks wait on each other in one order and never deadlock."""
    ordered = sorted(claims, key=lambda claim: (claim.fire.schedule_id, claim.fire.fire_time))
    won_ids: set[str] = set()
    for start in range(0, len(ordered), _CHUNK):
        rows = [_fire_values(claim.fire) for claim in ordered[start : start + _CHUNK]]
        won_ids.update(await insert_ignoring_duplicates(session, FIRES, rows, returning=FIRES.c.id))
    won = [claim for claim in ordered if claim.fire.id in won_ids]
    executions = [execution_values(claim.execution) for claim in won if claim.execution is not None]
    if executions:
        await session.execute(insert(EXECUTIONS), executions)
    await append_outbox(session, [event for claim in won for event in claim.events])
    return [claim.fire for claim in won]


async def release_fire(session: AsyncConnection, fire_id: str, execution: Execution, events: Sequence[Event]) -> bool:
    """See `ScheduleStore.release_fire`."""
    result = await session.execute(
        update(FIRES)
        .where(FIRES.c.id == fire_id, FIRES.c.status == FireStatus.PENDING.value)
        .values(status=FireStatus.FIRED.value, execution_id=execution.execution_id, fired_at=utcnow(), note=None)
    )
    if result.rowcount != 1:
        return False
    await session.execute(insert(EXECUTIONS).values(**execution_values(execution)))
    await append_outbox(session, events)
    return True


def _fire_from(row: Any) -> ScheduleFire:
    outcome = ExecutionStatus(row.outcome) if row.outcome else None
    return _light_fire(row, outcome, row.started_at).model_copy(
        update={
            "finished_at": row.finished_at,
            "result": row.output,
            "error": ExecutionError.model_validate(row.error) if row.error else None,
        }
    )


def _fires_query() -> Any:
    return select(
        FIRES,
        EXECUTIONS.c.status.label("outcome"),
        EXECUTIONS.c.started_at,
        EXECUTIONS.c.finished_at,
        EXECUTIONS.c.output,
        EXECUTIONS.c.error,
    ).outerjoin(EXECUTIONS, EXECUTIONS.c.execution_id == FIRES.c.execution_id)


async def list_fires(
    session: AsyncConnection, schedule_id: str, *, limit: int, before: datetime | None
) -> list[ScheduleFire]:
    """See `ScheduleStore.list_fires`."""
    await get_schedule(session, schedule_id)
    query = _fires_query().where(FIRES.c.schedule_id == schedule_id)
    if before is not None:
        query = query.where(FIRES.c.scheduled_for < before)
    rows = (await session.execute(query.order_by(FIRES.c.scheduled_for.desc()).limit(limit))).all()
    return [_fire_from(row) for row in rows]


async def unfinished_fires(session: AsyncConnection, *, limit: int) -> list[UnfinishedFire]:
    """See `ScheduleStore.unfinished_fires`. Light rows: the watch reads this every second."""
    running = (
        await session.execute(
            select(FIRES, EXECUTIONS.c.status.label("outcome"), EXECUTIONS.c.started_at, SCHEDULES.c.timeout_seconds)
            .select_from(EXECUTIONS)
            .join(FIRES, FIRES.c.execution_id == EXECUTIONS.c.execution_id)
            .join(SCHEDULES, SCHEDULES.c.id == FIRES.c.schedule_id)
            .where(EXECUTIONS.c.status.in_(_UNFINISHED), EXECUTIONS.c.schedule_id.is_not(None))
            .order_by(FIRES.c.fired_at)
            .limit(limit)
        )
    ).all()
    pending = (
        await session.execute(
            select(FIRES, SCHEDULES.c.timeout_seconds)
            .join(SCHEDULES, SCHEDULES.c.id == FIRES.c.schedule_id)
            .where(FIRES.c.status == FireStatus.PENDING.value)
            .order_by(FIRES.c.scheduled_for)
            .limit(limit)
        )
    ).all()
    found = [
        UnfinishedFire(_light_fire(row, ExecutionStatus(row.outcome), row.started_at), row.timeout_seconds)
        for row in running
    ]
    found.extend(UnfinishedFire(_light_fire(row, None, None), row.timeout_seconds) for row in pending)
    return found


def _light_fire(row: Any, outcome: ExecutionStatus | None, started_at: datetime | None) -> ScheduleFire:
    return ScheduleFire(
        id=row.id,
        schedule_id=row.schedule_id,
        agent=row.agent,
        fire_time=row.scheduled_for,
        fired_at=row.fired_at,
        status=FireStatus(row.status),
        note=row.note,
        execution_id=row.execution_id,
        outcome=outcome,
        started_at=started_at,
    )


async def append_outbox(session: AsyncConnection, events: Sequence[Event]) -> None:
    """Write `events` to the outbox in the caller's transaction."""
    if events:
        now = utcnow()
        rows = [
            {"id": e.event_id, "topic": e.topic, "event": e.model_dump(mode="json"), "created_at": now} for e in events
        ]
        await session.execute(insert(OUTBOX), rows)


async def insert_ignoring_duplicates(
    session: AsyncConnection, table: Table, rows: list[dict[str, Any]], *, returning: Any = None
) -> list[Any]:
    """INSERT ... ON CONFLICT DO NOTHING (on either backend); the `returning` column of
    the rows actually inserted."""
    dialect = postgresql if session.dialect.name == "postgresql" else sqlite
    # The rows as parameters, not in the statement: its compiled form is then cached (a
    # statement with the values in it was compiled anew on every call, ~0.2 ms).
    statement = dialect.insert(table).on_conflict_do_nothing()
    if returning is None:
        await session.execute(statement, rows)
        return []
    return list((await session.execute(statement.returning(returning), rows)).scalars())


class SchedulesSQL(SQLEngine):
    """`ScheduleStore` over the shared engine: each method opens the transaction and runs
    this module's function of the same name in it."""

    async def sync_config_schedules(self, schedules: Sequence[Schedule]) -> None:
        async with self._session(write=True, atomic=True) as session:
            await sync_config_schedules(session, schedules)

    async def create_schedule(self, schedule: Schedule) -> Schedule:
        try:
            async with self._session(write=True) as session:
                await session.execute(insert(SCHEDULES).values(**schedule_values(schedule)))
        except IntegrityError as exc:
            raise ConflictError(f"schedule {schedule.id!r} already exists", schedule_id=schedule.id) from exc
        return await self.get_schedule(schedule.id)

    @idempotent
    async def get_schedule(self, schedule_id: str) -> Schedule:
        async with self._session() as session:
            return await get_schedule(session, schedule_id)

    @idempotent
    async def list_schedules(self, *, agent: str | None = None, tenant: str | None = None) -> list[Schedule]:
        async with self._session() as session:
            return await list_schedules(session, agent=agent, tenant=tenant)

    async def delete_schedule(self, schedule_id: str) -> None:
        async with self._session(write=True, atomic=True) as session:
            await get_schedule(session, schedule_id)
            await session.execute(delete(FIRES).where(FIRES.c.schedule_id == schedule_id))
            await session.execute(delete(SCHEDULES).where(SCHEDULES.c.id == schedule_id))

    async def set_schedule_paused(self, schedule_id: str, paused: bool) -> Schedule:
        async with self._session(write=True, atomic=True) as session:
            await set_paused(session, schedule_id, paused)
        return await self.get_schedule(schedule_id)

    @idempotent
    async def schedules_version(self) -> str:
        async with self._session() as session:
            return await schedules_version(session)

    @idempotent
    async def schedule_activity(self, schedule_ids: Sequence[str]) -> dict[str, Activity]:
        async with self._session() as session:
            return await schedule_activity(session, schedule_ids)

    async def claim_fires(self, claims: Sequence[FireClaim]) -> list[ScheduleFire]:
        try:
            async with self._session(write=True, atomic=True) as session:
                return await claim_fires(session, claims)
        except IntegrityError:
            pass  # a schedule was deleted meanwhile (its fires would dangle): claim the others
        async with self._session(write=True, atomic=True) as session:
            ids = {claim.fire.schedule_id for claim in claims}
            alive = {s.id for s in await list_schedules(session, ids=sorted(ids))}
            return await claim_fires(session, [c for c in claims if c.fire.schedule_id in alive])

    async def release_fire(self, fire_id: str, execution: Execution, events: Sequence[Event] = ()) -> bool:
        async with self._session(write=True, atomic=True) as session:
            return await release_fire(session, fire_id, execution, events)

    @idempotent
    async def unfinished_fires(self, *, limit: int = 1000) -> list[UnfinishedFire]:
        async with self._session() as session:
            return await unfinished_fires(session, limit=limit)

    @idempotent
    async def list_fires(
        self, schedule_id: str, *, limit: int = 50, before: datetime | None = None
    ) -> list[ScheduleFire]:
        if limit < 1:
            raise BadRequestError(f"limit must be at least 1, got {limit}")
        async with self._session() as session:
            return await list_fires(session, schedule_id, limit=limit, before=before)
