"""Executions in SQL: create (grouped into one transaction when several come at once), save,
start and read one; list, usage and the execution recorded under an idempotency key; the
outbox of events written with them."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    Select,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from agentrunner.adapters.state import schedule_sql, sqlite_hop, usage_sql
from agentrunner.adapters.state.engine import SQLEngine, idempotent, in_flight
from agentrunner.adapters.state.executions_statements import (
    EXECUTIONS,
    MARK_ONE_PUBLISHED,
    MARK_PUBLISHED_ANY,
    OUTBOX,
    START_EXECUTION,
    STARTABLE,
    Create,
    Save,
    Start,
    create_on_sqlite,
    execution_params,
    execution_statement,
    execution_statement_with_outbox,
    outbox_rows,
    save_on_sqlite,
    start_on_sqlite,
)
from agentrunner.adapters.state.group_commit import GroupCommit
from agentrunner.adapters.state.rows import decode_cursor, encode_cursor, execution_from
from agentrunner.adapters.state.steps_sql import step_params, step_upsert
from agentrunner.adapters.state.tables import ExecutionRow, OutboxRow
from agentrunner.domain.errors import (
    AgentRunnerError,
    BadRequestError,
    ConflictError,
    DependencyUnavailableError,
    ExecutionNotFoundError,
)
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionStatus, utcnow
from agentrunner.domain.state import UsageTotals
from agentrunner.domain.steps import Step
from agentrunner.ports.state import (
    ExecutionPage,
    IdempotencyClaim,
    IdempotencyKeyTakenError,
    KeyedInvocation,
    OutboxEntry,
)

T = TypeVar("T")


class ExecutionsSQL(SQLEngine):
    """`ExecutionStore`, `ExecutionQueries` and `Outbox` over the shared engine."""

    @functools.cached_property
    def _creates(self) -> GroupCommit[Create]:
        return GroupCommit(self._create_many)

    # SQLite's starts and updates (an execution's end) asked for while others are written
    # go together, in one trip and one commit (on PostgreSQL each is one statement already).
    @functools.cached_property
    def _sqlite_starts(self) -> GroupCommit[Start]:
        return GroupCommit(self._sqlite_group(start_on_sqlite))

    @functools.cached_property
    def _sqlite_saves(self) -> GroupCommit[Save]:
        return GroupCommit(self._sqlite_group(save_on_sqlite))

    def _sqlite_group(
        self, write: Callable[[Sequence[T], sqlite_hop.Transaction], None]
    ) -> Callable[[list[T]], Awaitable[list[BaseException | None]]]:
        """`write` over a batch in one trip; when an item refuses it (a constraint), each
        item alone, so only the item at fault fails (a batch's transaction is all or
        nothing). An outage fails the batch as it is: each alone would wait it out again."""

        async def write_many(items: list[T]) -> list[BaseException | None]:
            try:
                await self._sqlite_hop(functools.partial(write, items))
                return [None] * len(items)
            except DependencyUnavailableError as exc:
                return [exc] * len(items)
            except Exception as exc:  # noqa: BLE001 - returned: the callers raise it
                if len(items) == 1:
                    return [exc]
            outcomes: list[BaseException | None] = []
            for item in items:
                try:
                    await self._sqlite_hop(functools.partial(write, [item]))
                    outcomes.append(None)
                except Exception as exc:  # noqa: BLE001 - that item's caller raises it
                    outcomes.append(exc)
            return outcomes

        return write_many

    async def _write_execution(
        self,
        execution: Execution,
        *,
        new: bool,
        events: Sequence[Event],
        only_if: frozenset[ExecutionStatus] | None = None,
        idempotency: IdempotencyClaim | None = None,
        steps: Sequence[Step] = (),
    ) -> int:
        """Insert (`new`, with its `idempotency` key if any) or update `execution` and, only
        when a row changed, append `events` to the outbox and write `steps` to the journal,
        atomically; return how many execution rows changed. PostgreSQL's (SQLite's writes
        take its lean path: `executions_statements.create_on_sqlite`, `save_on_sqlite`).

        ONE statement (the change as a data-modifying CTE, the outbox rows and steps
        written only if it returned a row), so it needs no transaction around it and runs
        alone on a pooled connection (`_lean_rowcount`); steps without events are a second
        statement, in one transaction with the change. The statements are built once and
        reused with parameters: building one per call cost more than running it."""
        params = execution_params(execution, idempotency) if new else execution_params(execution)
        if steps and not events:
            async with self._session(write=True, atomic=True) as session:
                changed = int((await session.execute(execution_statement(new, only_if), params)).rowcount)
                if changed:
                    await self._append_steps(session, steps)
            return changed
        if not events:
            return await self._lean_rowcount(execution_statement(new, only_if), params)
        now = utcnow()
        for i, e in enumerate(events):
            params |= {f"o{i}_id": e.event_id, f"o{i}_topic": e.topic, f"o{i}_event": e.model_dump(mode="json")}
            params[f"o{i}_created_at"] = now
        for i, step in enumerate(steps):
            params |= {f"s{i}_{name[2:]}": value for name, value in step_params(step).items()}
        statement = execution_statement_with_outbox(new, only_if, len(events), len(steps))
        return 1 if await self._lean_rowcount(statement, params) else 0

    # -- executions ------------------------------------------------------------------

    async def create_execution(
        self,
        execution: Execution,
        *,
        events: Sequence[Event] = (),
        idempotency: IdempotencyClaim | None = None,
        steps: Sequence[Step] = (),
    ) -> None:
        await self._creates.submit((execution, events, idempotency, steps))

    async def _create_many(self, items: list[Create]) -> list[BaseException | None]:
        """Write new executions with their outbox events (and steps): several in one
        transaction (one INSERT per table), or one by one when one of them exists already
        (its id, or its idempotency key), so only that one fails, or when the connection
        died under the batch (then each is looked for before it is written again)."""
        maybe_stored = False
        if len(items) > 1:
            rows = [execution_params(execution, claim) for execution, _, claim, _ in items]
            events = [event for _, events, _, _ in items for event in events]
            steps = [step for *_, steps in items for step in steps]
            try:
                if self.is_sqlite:
                    outbox, journal = outbox_rows(events), [step_params(step) for step in steps]
                    await self._sqlite_hop(functools.partial(create_on_sqlite, rows, outbox, journal))
                    return [None] * len(items)
                async with self._session(write=True, atomic=True) as session:
                    await session.execute(execution_statement(True, None), rows)
                    await _append_outbox(session, events)
                    await self._append_steps(session, steps)
                return [None] * len(items)
            except IntegrityError:
                pass
            except DependencyUnavailableError as exc:
                if not in_flight(exc):
                    return [exc] * len(items)
                maybe_stored = True  # the COMMIT may have been applied before the connection died
        return [await self._create_one(*item, maybe_stored=maybe_stored) for item in items]

    async def _create_one(
        self,
        execution: Execution,
        events: Sequence[Event],
        claim: IdempotencyClaim | None,
        steps: Sequence[Step],
        *,
        maybe_stored: bool = False,
    ) -> BaseException | None:
        """Write one new execution (with its steps: in one transaction, so a refused one
        leaves none). A write whose connection died in flight may have been applied: it is
        tried again (once), and a row with this execution's id and creation time found then
        is this write's own, not a conflict. Never written twice: the execution id is the
        table's key."""
        while True:
            try:
                if self.is_sqlite:
                    row, outbox = execution_params(execution, claim), outbox_rows(events)
                    journal = [step_params(step) for step in steps]
                    await self._sqlite_hop(functools.partial(create_on_sqlite, [row], outbox, journal))
                    return None
                await self._write_execution(execution, new=True, events=events, idempotency=claim, steps=steps)
                return None
            except DependencyUnavailableError as exc:
                if maybe_stored or not in_flight(exc):
                    return exc
                maybe_stored = True
                continue
            except IntegrityError:
                if maybe_stored and await self._stored_as(execution):
                    return None
                if claim is None:
                    return ConflictError(f"execution {execution.execution_id} already exists")
            # The key is on an execution already: taken, or expired (then freed, and again).
            async with self._session(write=True) as session:
                earlier = await self._keyed_execution(session, claim.key)
                if earlier is None:
                    return ConflictError(f"execution {execution.execution_id} already exists")
                if earlier.created_at >= claim.expired_before:
                    return IdempotencyKeyTakenError(earlier)
                await session.execute(
                    update(EXECUTIONS)
                    .where(EXECUTIONS.c.idempotency_key == claim.key, EXECUTIONS.c.created_at < claim.expired_before)
                    .values(idempotency_key=None, idempotency_fingerprint=None)
                )

    async def _append_steps(self, session: AsyncConnection, steps: Sequence[Step]) -> None:
        """Write `steps` in the caller's transaction (after the execution they belong to)."""
        if steps:
            rows = [step_params(step) for step in steps]
            await session.execute(step_upsert(self.is_sqlite), rows[0] if len(rows) == 1 else rows)

    async def _stored_as(self, execution: Execution) -> bool:
        """Whether `execution` itself (its id, created at its time) is stored."""
        async with self._session() as session:
            found = await session.execute(
                select(EXECUTIONS.c.created_at).where(EXECUTIONS.c.execution_id == execution.execution_id)
            )
            created_at = found.scalar_one_or_none()
        return created_at is not None and _same_instant(created_at, execution.created_at)

    @staticmethod
    async def _keyed_execution(
        session: AsyncConnection, key: str, *, expired_before: datetime | None = None
    ) -> KeyedInvocation | None:
        """The invocation recorded under an idempotency `key` (unless it expired)."""
        query = select(EXECUTIONS.c.execution_id, EXECUTIONS.c.idempotency_fingerprint, EXECUTIONS.c.created_at).where(
            EXECUTIONS.c.idempotency_key == key
        )
        if expired_before is not None:
            query = query.where(EXECUTIONS.c.created_at >= expired_before)
        found = (await session.execute(query)).first()
        if found is None:
            return None
        return KeyedInvocation(found.execution_id, found.idempotency_fingerprint, found.created_at)

    async def save_execution(
        self,
        execution: Execution,
        *,
        events: Sequence[Event] = (),
        only_if: frozenset[ExecutionStatus] | None = None,
        steps: Sequence[Step] = (),
    ) -> None:
        # With events, ONE statement on PostgreSQL (see `_write_execution`); steps alone are a
        # second statement, so they need a transaction around the two.
        if self.is_sqlite:
            journal = [step_params(step) for step in steps]
            save = Save(execution_statement(False, only_if), execution_params(execution), outbox_rows(events), journal)
            await self._sqlite_saves.submit(save)
            if save.changed != 1:
                async with self._session() as session:
                    raise await self._unsaved(session, execution.execution_id, only_if)
            return
        changed = await self._write_execution(execution, new=False, events=events, only_if=only_if, steps=steps)
        if changed != 1:
            async with self._session() as session:
                raise await self._unsaved(session, execution.execution_id, only_if)

    async def start_execution(self, execution_id: str, *, worker: str, provider: str, model: str) -> Execution:
        params: dict[str, Any] = {"v_execution_id": execution_id, "v_worker": worker, "v_provider": provider}
        params |= {"v_model": model, "v_now": utcnow()}
        if self.is_sqlite:
            await self._sqlite_starts.submit(start := Start(params))
            started = start.started
            if started is None:
                async with self._session() as session:
                    raise await self._unsaved(session, execution_id, STARTABLE)
            return execution_from(started)
        row = await self._lean_first(START_EXECUTION, params)
        if row is None:
            async with self._session() as session:
                raise await self._unsaved(session, execution_id, STARTABLE)
        return execution_from(row)

    @staticmethod
    async def _unsaved(
        session: AsyncConnection, execution_id: str, only_if: frozenset[ExecutionStatus] | None
    ) -> AgentRunnerError:
        stored = await session.scalar(select(EXECUTIONS.c.status).where(EXECUTIONS.c.execution_id == execution_id))
        if stored is None:
            return ExecutionNotFoundError(f"execution {execution_id} not found", execution_id=execution_id)
        expected = ", ".join(sorted(status.value for status in only_if or ()))
        return ConflictError(
            f"execution {execution_id} is {stored}, not {expected}: left as it is",
            execution_id=execution_id,
            status=stored,
        )

    @idempotent
    async def get_execution(self, execution_id: str) -> Execution:
        async with self._session() as session:
            row = (await session.execute(select(EXECUTIONS).where(EXECUTIONS.c.execution_id == execution_id))).first()
            if row is None:
                raise ExecutionNotFoundError(f"execution {execution_id} not found", execution_id=execution_id)
            return execution_from(row)

    @idempotent
    async def list_executions(
        self,
        *,
        agent: str | None = None,
        status: ExecutionStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tenant: str | None = None,
        agent_version: int | None = None,
    ) -> ExecutionPage:
        if limit < 1:
            raise BadRequestError(f"limit must be at least 1, got {limit}")
        query = list_query(agent=agent, status=status, cursor=cursor, tenant=tenant)
        if agent_version is not None:
            query = query.where(ExecutionRow.agent_version == agent_version)
        query = query.limit(limit + 1)
        async with self._session() as session:
            rows = (await session.execute(query)).all()
        items = [execution_from(row) for row in rows[:limit]]
        next_cursor = encode_cursor(items[-1]) if len(rows) > limit and items else None
        return ExecutionPage(items=items, next_cursor=next_cursor)

    @idempotent
    async def usage(
        self,
        *,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        tenant: str | None = None,
    ) -> UsageTotals:
        query = usage_sql.usage_query(agent=agent, since=since, until=until, tenant=tenant)
        async with self._session() as session:
            agents = usage_sql.usage_by_agent(list((await session.execute(query)).all()))
        return UsageTotals.of(agents, since=since, until=until)

    # -- retention -------------------------------------------------------------------

    @idempotent
    async def keyed_invocation(self, key: str, *, expired_before: datetime) -> KeyedInvocation | None:
        async with self._session() as session:
            return await self._keyed_execution(session, key, expired_before=expired_before)

    @idempotent
    async def pending_events(self, *, limit: int = 100, older_than_seconds: float = 0.0) -> list[OutboxEntry]:
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)
        query = (
            select(OUTBOX)
            .where(OutboxRow.published_at.is_(None), OutboxRow.created_at <= cutoff)
            .order_by(OutboxRow.created_at, OutboxRow.id)
            .limit(limit)
        )
        async with self._session() as session:
            rows = (await session.execute(query)).all()
        return [OutboxEntry(id=row.id, event=Event.model_validate(row.event)) for row in rows]

    @idempotent
    async def mark_published(self, entry_ids: Sequence[str]) -> None:
        if not entry_ids:
            return
        now = utcnow()
        if self.is_sqlite:
            rows = [{"v_id": entry_id, "v_now": now} for entry_id in entry_ids]
            await self._sqlite_hop(lambda tx: tx.many(MARK_ONE_PUBLISHED, rows))
            return
        await self._lean_rowcount(MARK_PUBLISHED_ANY, {"ids": list(entry_ids), "now": now})


def list_query(
    *, agent: str | None, status: ExecutionStatus | None, cursor: str | None, tenant: str | None
) -> Select[Any]:
    """Executions newest first (of `tenant` when given, filtered by `agent` and `status`),
    after `cursor`: keyset paging, served in order by an index for each filter (migration 0017)."""
    query = select(EXECUTIONS)
    if tenant is not None:
        query = query.where(ExecutionRow.tenant == tenant)
    if agent:
        query = query.where(ExecutionRow.agent == agent)
    if status:
        query = query.where(ExecutionRow.status == status.value)
    if cursor:
        created, execution_id = decode_cursor(cursor)
        query = query.where(tuple_(ExecutionRow.created_at, ExecutionRow.execution_id) < (created, execution_id))
    return query.order_by(ExecutionRow.created_at.desc(), ExecutionRow.execution_id.desc())


_append_outbox = schedule_sql.append_outbox


def _same_instant(stored: datetime, ours: datetime) -> bool:
    """SQLite gives naive UTC times back, PostgreSQL aware ones."""
    if stored.tzinfo is None and ours.tzinfo is not None:
        ours = ours.replace(tzinfo=None) - (ours.utcoffset() or timedelta())
    return stored == ours
