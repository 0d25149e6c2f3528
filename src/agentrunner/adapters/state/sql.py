"""StateStore on SQLAlchemy 2 async: SQLite (aiosqlite) for the embedded mode, PostgreSQL
(asyncpg) for the distributed one. The only module that writes SQL; driver errors are
translated here and nowhere else."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar, cast

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Insert,
    Table,
    Update,
    and_,
    bindparam,
    delete,
    event,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from agentrunner.adapters.state import audit_sql, plan_sql, retention_sql, schedule_sql
from agentrunner.adapters.state.errors import as_outage
from agentrunner.adapters.state.group_commit import GroupCommit
from agentrunner.adapters.state.rows import (
    dead_letter_from,
    dead_letter_id,
    decode_cursor,
    encode_cursor,
    execution_from,
    execution_values,
    state_from,
    state_payload,
)
from agentrunner.adapters.state.tables import (
    AgentRow,
    AgentStateRow,
    DeadLetterRow,
    ExecutionRow,
    IdempotencyKeyRow,
    OutboxRow,
    WebhookDeliveryRow,
)
from agentrunner.adapters.state.urls import alembic_config, prepare_sqlite_folder
from agentrunner.domain.audit import AuditEntry
from agentrunner.domain.errors import (
    AgentRunnerError,
    BadRequestError,
    ConfigError,
    ConflictError,
    DeadLetterNotFoundError,
    DependencyUnavailableError,
    ExecutionNotFoundError,
    StateNotFoundError,
)
from agentrunner.domain.event import DeadLetter, Event, StoredDeadLetter
from agentrunner.domain.execution import Execution, ExecutionStatus, utcnow
from agentrunner.domain.plan import PlanRun, PlanRunStatus
from agentrunner.domain.redaction import mask_url
from agentrunner.domain.schedule import Activity, Schedule, ScheduleFire
from agentrunner.domain.state import AgentState, UsageTotals
from agentrunner.domain.webhook import WebhookAttempt, WebhookDelivery
from agentrunner.ports.retention import PurgeKind
from agentrunner.ports.state import (
    AgentRecord,
    ExecutionPage,
    FireClaim,
    IdempotencyClaim,
    IdempotencyKeyTakenError,
    IdempotentRequest,
    KeyedInvocation,
    OutboxEntry,
    UnfinishedFire,
)

EXECUTIONS = cast("Table", ExecutionRow.__table__)
DEAD_LETTERS = cast("Table", DeadLetterRow.__table__)
STATES = cast("Table", AgentStateRow.__table__)
OUTBOX = cast("Table", OutboxRow.__table__)
AGENTS = cast("Table", AgentRow.__table__)
IDEMPOTENCY_KEYS = cast("Table", IdempotencyKeyRow.__table__)
WEBHOOK_DELIVERIES = cast("Table", WebhookDeliveryRow.__table__)

P = ParamSpec("P")
R = TypeVar("R")


def _in_flight(exc: DependencyUnavailableError) -> bool:
    """The connection died under the operation (not before it): it may run again on a new one."""
    return bool(exc.context.get("reconnect")) and not exc.context.get("waited")


def _same_instant(stored: datetime, ours: datetime) -> bool:
    """SQLite gives naive UTC times back, PostgreSQL aware ones."""
    if stored.tzinfo is None and ours.tzinfo is not None:
        ours = ours.replace(tzinfo=None) - (ours.utcoffset() or timedelta())
    return stored == ours


def _read(operation: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """An operation that may run twice (a read, or a write idempotent by key) tried once
    more when its connection died under it: a restart kills every pooled connection, and
    the retry takes a new one (waiting out the restart in `_connection`)."""

    @functools.wraps(operation)
    async def retried(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await operation(*args, **kwargs)
        except DependencyUnavailableError as exc:
            if not _in_flight(exc):
                raise
        return await operation(*args, **kwargs)

    return retried


class SQLStateStore:
    """StateStore over a SQLAlchemy async engine (see `ports.StateStore`; also `Retention`
    and `AuditLog`).

    `migrate=True` upgrades the schema to the newest migration at start (the embedded mode
    does this); otherwise start refuses a database that is not at the newest migration and
    says to run `agentrunner db upgrade`, so replicas never race on a migration.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 20,
        statement_timeout_ms: int = 30_000,
        migrate: bool = True,
    ) -> None:
        self._url = make_url(url)
        self._pool_size = pool_size
        self._max_overflow = max_overflow
        self._statement_timeout_ms = statement_timeout_ms
        self._migrate = migrate
        self._engine: AsyncEngine | None = None
        self._autocommit: AsyncEngine | None = None  # the same pool, no transactions
        self._creates: GroupCommit[_Create] = GroupCommit(self._create_many)

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite backend."""
        return self._url.get_backend_name() == "sqlite"

    @property
    def _where(self) -> str:
        return mask_url(self._url.render_as_string(hide_password=False))

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self.is_sqlite:
            prepare_sqlite_folder(self._url.render_as_string(hide_password=False))
            # One connection: SQLite has one writer anyway, and waiting in the pool is fair and
            # prompt where several connections would sleep in SQLite's busy handler. No reset
            # when it goes back to the pool: every use ends its own transaction (commit, or
            # the rollback of the connection's close), so the pool's extra ROLLBACK would be
            # one more hop to SQLite's thread per operation for nothing.
            engine = create_async_engine(self._url, pool_size=1, max_overflow=0, pool_reset_on_return=None)
            event.listen(engine.sync_engine, "connect", _tune_sqlite)
        else:
            engine = create_async_engine(
                self._url,
                pool_size=self._pool_size,
                max_overflow=self._max_overflow,
                connect_args={"server_settings": {"statement_timeout": str(self._statement_timeout_ms)}},
            )
            event.listen(engine.sync_engine.pool, "checkin", _note_checkin)
            event.listen(engine.sync_engine.pool, "checkout", _check_on_checkout)
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        try:
            async with engine.begin() as connection:
                await connection.run_sync(self._upgrade if self._migrate else self._require_head)
        except Exception as exc:
            await self.close()
            outage = as_outage(exc, self._where)
            if outage is None:
                raise
            raise outage from exc

    @staticmethod
    def _upgrade(connection: Connection) -> None:
        # Most starts find the schema at head already (every restart, every replica, every
        # test database copied from the migrated template): one query says so, where
        # Alembic's upgrade would load every migration script again to do nothing.
        if MigrationContext.configure(connection).get_current_revision() == _head_revision():
            return
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    def _require_head(self, connection: Connection) -> None:
        head = _head_revision()
        current = MigrationContext.configure(connection).get_current_revision()
        if current != head:
            raise ConfigError(
                f"database {self._where} is at schema revision {current or 'none'}, this agentrunner needs "
                f"{head}: run `agentrunner db upgrade`"
            )

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = self._autocommit = None

    async def ping(self) -> None:
        async with self._session(patient=False) as session:  # readiness answers now, not later
            await session.execute(select(1))

    @asynccontextmanager
    async def _session(
        self, *, write: bool = False, atomic: bool = False, patient: bool = True
    ) -> AsyncIterator[AsyncConnection]:
        """A connection for one operation, with driver errors translated (`errors.as_outage`).

        `atomic`: several statements that commit together, in a transaction. Otherwise, on
        PostgreSQL, every statement is its own transaction (autocommit), which spares the
        BEGIN and COMMIT round trips; so an atomic write on PostgreSQL is ONE statement
        (data-modifying CTEs), see `_write`. SQLite runs every `write` in a transaction
        (it has no round trips to spare). Core statements on a connection, not the ORM
        session: a third of the cost per call.

        `patient`: while the database is not there (a restart), getting the connection is
        tried again for up to `RECONNECT_WINDOW_SECONDS`. That is safe for writes too: no
        statement of the operation has been sent yet (a failure once one has is raised)."""
        if self._engine is None or self._autocommit is None:
            raise DependencyUnavailableError("the state store is not started (or was closed)")
        engine = self._engine if atomic or self.is_sqlite else self._autocommit
        connection = await self._connection(engine, patient=patient)
        try:
            try:
                if atomic or (write and self.is_sqlite):
                    async with connection.begin():
                        yield connection
                else:
                    yield connection
            finally:
                await connection.close()
        except Exception as exc:
            outage = as_outage(exc, self._where)
            if outage is None:
                raise
            raise outage from exc

    async def _connection(self, engine: AsyncEngine, *, patient: bool) -> AsyncConnection:
        """A connection from the pool (a dead pooled one is replaced on checkout: see
        `_check_on_checkout`), waiting out a short outage when `patient`."""
        deadline = time.monotonic() + (RECONNECT_WINDOW_SECONDS if patient else 0.0)
        delay = RECONNECT_FIRST_DELAY_SECONDS
        while True:
            try:
                return await engine.connect()
            except Exception as exc:
                outage = as_outage(exc, self._where)
                if outage is None:
                    raise
                if time.monotonic() + delay > deadline:
                    outage.context["waited"] = patient  # `_read` need not wait again
                    raise outage from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _write_execution(
        self,
        session: AsyncConnection,
        execution: Execution,
        *,
        new: bool,
        events: Sequence[Event],
        only_if: frozenset[ExecutionStatus] | None = None,
        idempotency: IdempotencyClaim | None = None,
    ) -> int:
        """Insert (`new`, with its `idempotency` key if any) or update `execution` and, only
        when a row changed, append `events` to the outbox, atomically; return how many
        execution rows changed.

        On PostgreSQL this is ONE statement (the change as a data-modifying CTE, the outbox
        rows inserted only if it returned a row), so it needs no transaction around it. On
        SQLite, two statements in the caller's transaction. The statements are built once
        and reused with parameters: building one per call cost more than running it."""
        params = _execution_params(execution, idempotency) if new else _execution_params(execution)
        if self.is_sqlite or not events:
            changed = (await session.execute(_execution_statement(new, only_if), params)).rowcount
            if changed and events:
                await _append_outbox(session, events)
            return int(changed)
        now = utcnow()
        for i, e in enumerate(events):
            params |= {f"o{i}_id": e.event_id, f"o{i}_topic": e.topic, f"o{i}_event": e.model_dump(mode="json")}
            params[f"o{i}_created_at"] = now
        statement = _execution_statement_with_outbox(new, only_if, len(events))
        return 1 if (await session.execute(statement, params)).rowcount else 0

    # -- executions ------------------------------------------------------------------

    async def create_execution(
        self, execution: Execution, *, events: Sequence[Event] = (), idempotency: IdempotencyClaim | None = None
    ) -> None:
        await self._creates.submit((execution, events, idempotency))

    async def _create_many(self, items: list[_Create]) -> list[BaseException | None]:
        """Write new executions with their outbox events: several in one transaction (one
        INSERT per table), or one by one when one of them exists already (its id, or its
        idempotency key), so only that one fails, or when the connection died under the
        batch (then each is looked for before it is written again)."""
        maybe_stored = False
        if len(items) > 1:
            try:
                async with self._session(write=True, atomic=True) as session:
                    rows = [_execution_params(execution, claim) for execution, _, claim in items]
                    await session.execute(_execution_statement(True, None), rows)
                    await _append_outbox(session, [event for _, events, _ in items for event in events])
                return [None] * len(items)
            except IntegrityError:
                pass
            except DependencyUnavailableError as exc:
                if not _in_flight(exc):
                    return [exc] * len(items)
                maybe_stored = True  # the COMMIT may have been applied before the connection died
        return [await self._create_one(*item, maybe_stored=maybe_stored) for item in items]

    async def _create_one(
        self,
        execution: Execution,
        events: Sequence[Event],
        claim: IdempotencyClaim | None,
        *,
        maybe_stored: bool = False,
    ) -> BaseException | None:
        """Write one new execution. A write whose connection died in flight may have been
        applied: it is tried again (once), and a row with this execution's id and creation
        time found then is this write's own, not a conflict. Never written twice: the
        execution id is the table's key."""
        while True:
            try:
                async with self._session(write=True) as session:
                    await self._write_execution(session, execution, new=True, events=events, idempotency=claim)
                return None
            except DependencyUnavailableError as exc:
                if maybe_stored or not _in_flight(exc):
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
    ) -> None:
        async with self._session(write=True) as session:
            if await self._write_execution(session, execution, new=False, events=events, only_if=only_if) != 1:
                raise await self._unsaved(session, execution.execution_id, only_if)

    async def start_execution(self, execution_id: str, *, worker: str, provider: str, model: str) -> Execution:
        params = {"v_execution_id": execution_id, "v_worker": worker, "v_provider": provider, "v_model": model}
        async with self._session(write=True) as session:
            row = (await session.execute(_START_EXECUTION, params | {"v_now": utcnow()})).first()
            if row is None:
                raise await self._unsaved(session, execution_id, _STARTABLE)
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

    @_read
    async def get_execution(self, execution_id: str) -> Execution:
        async with self._session() as session:
            row = (await session.execute(select(EXECUTIONS).where(EXECUTIONS.c.execution_id == execution_id))).first()
            if row is None:
                raise ExecutionNotFoundError(f"execution {execution_id} not found", execution_id=execution_id)
            return execution_from(row)

    @_read
    async def list_executions(
        self,
        *,
        agent: str | None = None,
        status: ExecutionStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tenant: str | None = None,
    ) -> ExecutionPage:
        if limit < 1:
            raise BadRequestError(f"limit must be at least 1, got {limit}")
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
        query = query.order_by(ExecutionRow.created_at.desc(), ExecutionRow.execution_id.desc()).limit(limit + 1)
        async with self._session() as session:
            rows = (await session.execute(query)).all()
        items = [execution_from(row) for row in rows[:limit]]
        next_cursor = encode_cursor(items[-1]) if len(rows) > limit and items else None
        return ExecutionPage(items=items, next_cursor=next_cursor)

    @_read
    async def usage(
        self,
        *,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        tenant: str | None = None,
    ) -> UsageTotals:
        query = retention_sql.usage_query(agent=agent, since=since, until=until, tenant=tenant)
        async with self._session() as session:
            agents = retention_sql.usage_by_agent(list((await session.execute(query)).all()))
        costs = [a.cost_usd for a in agents if a.cost_usd is not None]
        return UsageTotals(
            since=since,
            until=until,
            agents=agents,
            executions=sum(a.executions for a in agents),
            input_tokens=sum(a.input_tokens for a in agents),
            output_tokens=sum(a.output_tokens for a in agents),
            cost_usd=round(sum(costs), 8) if costs else None,
        )

    # -- retention -------------------------------------------------------------------

    @asynccontextmanager
    async def purge_lease(self) -> AsyncIterator[bool]:
        if self.is_sqlite:  # the embedded store belongs to one process
            yield True
            return
        # A session lock on a connection held for the pass: freed by the unlock, or by
        # PostgreSQL when the process (and so the connection) dies.
        async with self._session() as session:
            lock = retention_sql.PURGE_LOCK_KEY
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
            return await retention_sql.purge(session, kind, before=before, limit=limit)

    # -- agent state -----------------------------------------------------------------

    @_read
    async def load_state(self, agent: str, session_id: str, *, tenant: str | None = None) -> AgentState:
        query = select(STATES).where(
            STATES.c.agent == agent, STATES.c.tenant == (tenant or ""), STATES.c.session_id == session_id
        )
        async with self._session() as session:
            row = (await session.execute(query)).first()
            if row is None:
                raise StateNotFoundError(f"no state for agent {agent!r} session {session_id!r}")
            return state_from(row)

    async def save_state(self, state: AgentState, *, expected_version: int | None) -> AgentState:
        key = {"agent": state.agent, "tenant": state.tenant or "", "session_id": state.session_id}
        now = utcnow()
        try:
            async with self._session(write=True, atomic=expected_version is None) as session:
                if expected_version is None:
                    stored = await session.scalar(select(STATES.c.version).where(*_state_is(state)).with_for_update())
                    expected_version = stored or 0
                if expected_version == 0:
                    await session.execute(
                        insert(STATES).values(**key, payload=state_payload(state), version=1, updated_at=now)
                    )
                else:
                    result = await session.execute(
                        update(AgentStateRow)
                        .where(*_state_is(state), AgentStateRow.version == expected_version)
                        .values(payload=state_payload(state), version=expected_version + 1, updated_at=now)
                    )
                    if result.rowcount != 1:
                        raise await self._stale(session, state, expected_version)
        except IntegrityError as exc:
            raise ConflictError(
                f"state of agent {state.agent!r} session {state.session_id!r} already exists: "
                "load it and save with the version you read",
                agent=state.agent,
                session_id=state.session_id,
            ) from exc
        return state.model_copy(update={"version": expected_version + 1, "updated_at": now})

    @staticmethod
    async def _stale(session: AsyncConnection, state: AgentState, expected: int) -> ConflictError:
        current = await session.scalar(select(AgentStateRow.version).where(*_state_is(state)))
        where = f"agent {state.agent!r} session {state.session_id!r}"
        if current is None:
            return ConflictError(f"no state stored for {where} (expected version {expected}): save with version 0")
        return ConflictError(
            f"stale write to {where}: expected version {expected}, stored version is {current}; "
            "load the state again and reapply the change",
            current_version=current,
        )

    async def delete_state(self, agent: str, session_id: str, *, tenant: str | None = None) -> None:
        async with self._session(write=True) as session:
            result = await session.execute(
                delete(AgentStateRow).where(
                    AgentStateRow.agent == agent,
                    AgentStateRow.tenant == (tenant or ""),
                    AgentStateRow.session_id == session_id,
                )
            )
            if result.rowcount != 1:
                raise StateNotFoundError(f"no state for agent {agent!r} session {session_id!r}")

    # -- outbox ----------------------------------------------------------------------

    @_read
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

    @_read
    async def mark_published(self, entry_ids: Sequence[str]) -> None:
        if not entry_ids:
            return
        async with self._session(write=True) as session:
            await session.execute(
                update(OutboxRow)
                .where(OutboxRow.id.in_(list(entry_ids)), OutboxRow.published_at.is_(None))
                .values(published_at=utcnow())
            )

    # -- idempotency keys ------------------------------------------------------------

    async def claim_idempotency_key(
        self,
        key: str,
        fingerprint: str,
        *,
        expired_before: datetime,
        abandoned_before: datetime,
        tenant: str | None = None,
    ) -> IdempotentRequest | None:
        now = utcnow()
        row = {"key": key, "fingerprint": fingerprint, "created_at": now, "touched_at": now, "tenant": tenant}
        async with self._session(write=True) as session:  # a new key, the usual case: one statement
            if await schedule_sql.insert_ignoring_duplicates(
                session, IDEMPOTENCY_KEYS, [row], returning=IDEMPOTENCY_KEYS.c.key
            ):
                return None
        async with self._session(write=True, atomic=True) as session:
            await session.execute(
                delete(IdempotencyKeyRow).where(
                    IdempotencyKeyRow.key == key,
                    or_(
                        IdempotencyKeyRow.created_at < expired_before,
                        and_(IdempotencyKeyRow.completed_at.is_(None), IdempotencyKeyRow.touched_at < abandoned_before),
                    ),
                )
            )
            if await schedule_sql.insert_ignoring_duplicates(
                session, IDEMPOTENCY_KEYS, [row], returning=IDEMPOTENCY_KEYS.c.key
            ):
                return None
            found = (await session.execute(select(IDEMPOTENCY_KEYS).where(IdempotencyKeyRow.key == key))).first()
        if found is None:  # released between our insert and read: the caller may try again
            return await self.claim_idempotency_key(
                key, fingerprint, expired_before=expired_before, abandoned_before=abandoned_before, tenant=tenant
            )
        return IdempotentRequest(
            fingerprint=found.fingerprint,
            created_at=found.created_at,
            status_code=found.status_code,
            response=found.response or b"",
            content_type=found.content_type or "application/json",
        )

    @_read
    async def keyed_invocation(self, key: str, *, expired_before: datetime) -> KeyedInvocation | None:
        async with self._session() as session:
            return await self._keyed_execution(session, key, expired_before=expired_before)

    @_read
    async def touch_idempotency_key(self, key: str) -> None:
        async with self._session(write=True) as session:
            await session.execute(
                update(IdempotencyKeyRow)
                .where(IdempotencyKeyRow.key == key, IdempotencyKeyRow.completed_at.is_(None))
                .values(touched_at=utcnow())
            )

    async def complete_idempotency_key(self, key: str, status_code: int, response: bytes, content_type: str) -> None:
        now = utcnow()
        async with self._session(write=True) as session:
            await session.execute(
                update(IdempotencyKeyRow)
                .where(IdempotencyKeyRow.key == key)
                .values(
                    status_code=status_code,
                    response=response,
                    content_type=content_type,
                    touched_at=now,
                    completed_at=now,
                )
            )

    async def release_idempotency_key(self, key: str) -> None:
        async with self._session(write=True) as session:
            await session.execute(delete(IdempotencyKeyRow).where(IdempotencyKeyRow.key == key))

    # -- webhook deliveries ----------------------------------------------------------

    async def add_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        async with self._session(write=True) as session:
            await schedule_sql.insert_ignoring_duplicates(session, WEBHOOK_DELIVERIES, [_delivery_values(delivery)])

    async def claim_webhook_delivery(
        self, execution_id: str, *, now: datetime, lease_until: datetime
    ) -> WebhookDelivery | None:
        async with self._session(write=True, atomic=True) as session:
            claimed = await session.execute(
                update(WebhookDeliveryRow)
                .where(
                    WebhookDeliveryRow.execution_id == execution_id,
                    WebhookDeliveryRow.next_attempt_at <= now,
                    WebhookDeliveryRow.delivered_at.is_(None),
                    WebhookDeliveryRow.gave_up_at.is_(None),
                )
                .values(next_attempt_at=lease_until)
            )
            if claimed.rowcount != 1:
                return None
            row = (
                await session.execute(select(WEBHOOK_DELIVERIES).where(WebhookDeliveryRow.execution_id == execution_id))
            ).one()
        return _delivery_from(row)

    async def save_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        values = _delivery_values(delivery)
        del values["execution_id"]
        async with self._session(write=True) as session:
            await session.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.execution_id == delivery.execution_id)
                .values(**values)
            )

    @_read
    async def due_webhook_deliveries(self, *, now: datetime, limit: int = 100) -> list[str]:
        query = (
            select(WebhookDeliveryRow.execution_id)
            .where(
                WebhookDeliveryRow.next_attempt_at <= now,
                WebhookDeliveryRow.delivered_at.is_(None),
                WebhookDeliveryRow.gave_up_at.is_(None),
            )
            .order_by(WebhookDeliveryRow.next_attempt_at)
            .limit(limit)
        )
        async with self._session() as session:
            return list((await session.execute(query)).scalars())

    @_read
    async def get_webhook_delivery(self, execution_id: str) -> WebhookDelivery | None:
        query = select(WEBHOOK_DELIVERIES).where(WebhookDeliveryRow.execution_id == execution_id)
        async with self._session() as session:
            row = (await session.execute(query)).first()
        return None if row is None else _delivery_from(row)

    # -- dead letters ----------------------------------------------------------------

    async def record_dead_letter(self, letter: DeadLetter, *, tenant: str | None = None) -> StoredDeadLetter:
        stored = StoredDeadLetter(
            id=dead_letter_id(letter),
            queue=letter.queue,
            topic=letter.event.topic,
            event=letter.event,
            error=letter.error,
            attempts=letter.event.attempt,
            tenant=tenant,
        )
        values = {
            "id": stored.id,
            "queue": stored.queue,
            "topic": stored.topic,
            "event": stored.event.model_dump(mode="json"),
            "error": stored.error,
            "attempts": stored.attempts,
            "created_at": stored.created_at,
            "replayed_at": None,
            "tenant": tenant,
        }
        async with self._session(write=True, atomic=True) as session:
            await session.execute(delete(DEAD_LETTERS).where(DEAD_LETTERS.c.id == stored.id))
            await session.execute(insert(DEAD_LETTERS).values(**values))
        return stored

    @_read
    async def list_dead_letters(
        self, *, include_replayed: bool = False, limit: int = 100, tenant: str | None = None
    ) -> list[StoredDeadLetter]:
        query = select(DEAD_LETTERS).order_by(DEAD_LETTERS.c.created_at.desc(), DEAD_LETTERS.c.id).limit(limit)
        if tenant is not None:
            query = query.where(DEAD_LETTERS.c.tenant == tenant)
        if not include_replayed:
            query = query.where(DEAD_LETTERS.c.replayed_at.is_(None))
        async with self._session() as session:
            rows = (await session.execute(query)).all()
        return [dead_letter_from(row) for row in rows]

    @_read
    async def get_dead_letter(self, letter_id: str) -> StoredDeadLetter:
        async with self._session() as session:
            row = (await session.execute(select(DEAD_LETTERS).where(DEAD_LETTERS.c.id == letter_id))).first()
        if row is None:
            raise DeadLetterNotFoundError(f"dead letter {letter_id} not found: GET /dead-letters lists them")
        return dead_letter_from(row)

    async def mark_dead_letter_replayed(self, letter_id: str) -> StoredDeadLetter:
        async with self._session(write=True) as session:
            result = await session.execute(
                update(DEAD_LETTERS).where(DEAD_LETTERS.c.id == letter_id).values(replayed_at=utcnow())
            )
            if result.rowcount != 1:
                raise DeadLetterNotFoundError(f"dead letter {letter_id} not found: GET /dead-letters lists them")
        return await self.get_dead_letter(letter_id)

    async def delete_dead_letter(self, letter_id: str) -> None:
        async with self._session(write=True) as session:
            result = await session.execute(delete(DEAD_LETTERS).where(DEAD_LETTERS.c.id == letter_id))
            if result.rowcount != 1:
                raise DeadLetterNotFoundError(f"dead letter {letter_id} not found: GET /dead-letters lists them")

    # -- agent registry --------------------------------------------------------------

    async def sync_agents(self, agents: Sequence[AgentRecord]) -> None:
        now = utcnow()
        async with self._session(write=True, atomic=True) as session:
            await session.execute(delete(AGENTS))
            if agents:
                rows = [
                    {
                        "name": agent.name,
                        "source": agent.source,
                        "status": agent.status,
                        "reasons": list(agent.reasons),
                        "config": agent.config,
                        "updated_at": now,
                    }
                    for agent in agents
                ]
                await session.execute(insert(AGENTS), rows)

    @_read
    async def list_agents(self) -> list[AgentRecord]:
        async with self._session() as session:
            rows = (await session.execute(select(AGENTS).order_by(AGENTS.c.name))).all()
        return [AgentRecord(r.name, r.source, r.status, list(r.reasons), r.config) for r in rows]

    # -- schedules -------------------------------------------------------------------

    async def sync_config_schedules(self, schedules: Sequence[Schedule]) -> None:
        async with self._session(write=True, atomic=True) as session:
            await schedule_sql.sync_config_schedules(session, schedules)

    async def create_schedule(self, schedule: Schedule) -> Schedule:
        try:
            async with self._session(write=True) as session:
                await session.execute(insert(schedule_sql.SCHEDULES).values(**schedule_sql.schedule_values(schedule)))
        except IntegrityError as exc:
            raise ConflictError(f"schedule {schedule.id!r} already exists", schedule_id=schedule.id) from exc
        return await self.get_schedule(schedule.id)

    @_read
    async def get_schedule(self, schedule_id: str) -> Schedule:
        async with self._session() as session:
            return await schedule_sql.get_schedule(session, schedule_id)

    @_read
    async def list_schedules(self, *, agent: str | None = None, tenant: str | None = None) -> list[Schedule]:
        async with self._session() as session:
            return await schedule_sql.list_schedules(session, agent=agent, tenant=tenant)

    async def delete_schedule(self, schedule_id: str) -> None:
        async with self._session(write=True, atomic=True) as session:
            await schedule_sql.get_schedule(session, schedule_id)
            await session.execute(delete(schedule_sql.FIRES).where(schedule_sql.FIRES.c.schedule_id == schedule_id))
            await session.execute(delete(schedule_sql.SCHEDULES).where(schedule_sql.SCHEDULES.c.id == schedule_id))

    async def set_schedule_paused(self, schedule_id: str, paused: bool) -> Schedule:
        async with self._session(write=True, atomic=True) as session:
            await schedule_sql.set_paused(session, schedule_id, paused)
        return await self.get_schedule(schedule_id)

    @_read
    async def schedules_version(self) -> str:
        async with self._session() as session:
            return await schedule_sql.schedules_version(session)

    @_read
    async def schedule_activity(self, schedule_ids: Sequence[str]) -> dict[str, Activity]:
        async with self._session() as session:
            return await schedule_sql.schedule_activity(session, schedule_ids)

    async def claim_fires(self, claims: Sequence[FireClaim]) -> list[ScheduleFire]:
        try:
            async with self._session(write=True, atomic=True) as session:
                return await schedule_sql.claim_fires(session, claims)
        except IntegrityError:
            pass  # a schedule was deleted meanwhile (its fires would dangle): claim the others
        async with self._session(write=True, atomic=True) as session:
            ids = {claim.fire.schedule_id for claim in claims}
            alive = {s.id for s in await schedule_sql.list_schedules(session, ids=sorted(ids))}
            return await schedule_sql.claim_fires(session, [c for c in claims if c.fire.schedule_id in alive])

    async def release_fire(self, fire_id: str, execution: Execution, events: Sequence[Event] = ()) -> bool:
        async with self._session(write=True, atomic=True) as session:
            return await schedule_sql.release_fire(session, fire_id, execution, events)

    @_read
    async def unfinished_fires(self, *, limit: int = 1000) -> list[UnfinishedFire]:
        async with self._session() as session:
            return await schedule_sql.unfinished_fires(session, limit=limit)

    @_read
    async def list_fires(
        self, schedule_id: str, *, limit: int = 50, before: datetime | None = None
    ) -> list[ScheduleFire]:
        if limit < 1:
            raise BadRequestError(f"limit must be at least 1, got {limit}")
        async with self._session() as session:
            return await schedule_sql.list_fires(session, schedule_id, limit=limit, before=before)

    # -- plan runs (collaborative mode; the SQL is in plan_sql.py) ---------------------

    async def create_plan_run(self, run: PlanRun, *, events: Sequence[Event] = ()) -> PlanRun:
        try:
            async with self._session(write=True, atomic=True) as session:
                return await plan_sql.create_plan_run(session, run, events)
        except IntegrityError as exc:
            raise ConflictError(f"plan run {run.id} already exists", run_id=run.id) from exc

    async def save_plan_run(self, run: PlanRun, *, events: Sequence[Event] = ()) -> PlanRun:
        async with self._session(write=True, atomic=True) as session:
            return await plan_sql.save_plan_run(session, run, events)

    @_read
    async def get_plan_run(self, run_id: str) -> PlanRun:
        async with self._session() as session:
            return await plan_sql.get_plan_run(session, run_id)

    @_read
    async def list_plan_runs(
        self,
        *,
        agent: str | None = None,
        status: PlanRunStatus | None = None,
        limit: int = 50,
        tenant: str | None = None,
    ) -> list[PlanRun]:
        async with self._session() as session:
            return await plan_sql.list_plan_runs(session, agent=agent, status=status, limit=limit, tenant=tenant)

    # -- the audit log (the SQL is in audit_sql.py) ------------------------------------

    async def record_audit(self, entry: AuditEntry) -> AuditEntry:
        async with self._session(write=True) as session:
            return await audit_sql.record_audit(session, entry)

    @_read
    async def list_audit(self, *, before: int | None = None, limit: int = 100) -> list[AuditEntry]:
        if limit < 1:
            raise BadRequestError(f"limit must be at least 1, got {limit}")
        async with self._session() as session:
            return await audit_sql.list_audit(session, before=before, limit=limit)


def _state_is(state: AgentState) -> tuple[Any, ...]:
    """The conditions that pick `state`'s row: its agent, tenant and session."""
    return (
        AgentStateRow.agent == state.agent,
        AgentStateRow.tenant == (state.tenant or ""),
        AgentStateRow.session_id == state.session_id,
    )


# An execution's own columns; the idempotency key of the invocation that started it is
# written once, with it (`_execution_params`), and never updated.
_KEY_COLUMNS = ("idempotency_key", "idempotency_fingerprint")
EXECUTION_COLUMNS = tuple(column.name for column in EXECUTIONS.columns if column.name not in _KEY_COLUMNS)
_Create = tuple[Execution, Sequence[Event], IdempotencyClaim | None]


def _execution_params(execution: Execution, *claim: IdempotencyClaim | None) -> dict[str, Any]:
    """The `v_<column>` parameters of an execution's row; with `claim` (even None), of a
    new one, with the key of the invocation that started it."""
    params = {f"v_{column}": value for column, value in execution_values(execution).items()}
    if claim:
        key = claim[0]
        params["v_idempotency_key"] = key.key if key else None
        params["v_idempotency_fingerprint"] = key.fingerprint if key else None
    return params


OUTBOX_COLUMNS = ("id", "topic", "event", "created_at")


@functools.cache
def _execution_statement(new: bool, only_if: frozenset[ExecutionStatus] | None) -> Insert | Update:
    """INSERT of a whole execution row, or UPDATE of one by id (while its status is one of
    `only_if`), with `v_<column>` parameters."""
    values: dict[str, Any] = {c: bindparam(f"v_{c}") for c in EXECUTION_COLUMNS if c != "execution_id"}
    if new:
        keyed: dict[str, Any] = {c: bindparam(f"v_{c}") for c in _KEY_COLUMNS}
        return insert(EXECUTIONS).values(execution_id=bindparam("v_execution_id"), **values, **keyed)
    query = update(EXECUTIONS).where(EXECUTIONS.c.execution_id == bindparam("v_execution_id")).values(**values)
    if only_if is not None:  # constants, so the compiled statement is reused as it is
        query = query.where(EXECUTIONS.c.status.in_([literal_column(f"'{s.value}'") for s in sorted(only_if)]))
    return query


@functools.cache
def _execution_statement_with_outbox(new: bool, only_if: frozenset[ExecutionStatus] | None, events: int) -> Insert:
    """`_execution_statement` as a CTE, and `events` outbox rows (`o<i>_<column>`
    parameters) inserted only when it changed a row: one atomic statement (PostgreSQL)."""
    change = _execution_statement(new, only_if).returning(EXECUTIONS.c.execution_id).cte("change")
    rows = [
        select(*(bindparam(f"o{i}_{c}", type_=OUTBOX.c[c].type) for c in OUTBOX_COLUMNS)).where(
            exists(select(change.c.execution_id))
        )
        for i in range(events)
    ]
    return (
        insert(OUTBOX).from_select(list(OUTBOX_COLUMNS), rows[0] if events == 1 else union_all(*rows)).add_cte(change)
    )


_STARTABLE = frozenset({ExecutionStatus.QUEUED, ExecutionStatus.RUNNING})
_START_EXECUTION = (
    update(EXECUTIONS)
    .where(
        EXECUTIONS.c.execution_id == bindparam("v_execution_id"),
        EXECUTIONS.c.status.in_([literal_column(f"'{s.value}'") for s in sorted(_STARTABLE)]),
    )
    .values(
        status=ExecutionStatus.RUNNING.value,
        attempts=EXECUTIONS.c.attempts + 1,
        started_at=func.coalesce(EXECUTIONS.c.started_at, bindparam("v_now", type_=EXECUTIONS.c.started_at.type)),
        worker=bindparam("v_worker"),
        provider=bindparam("v_provider"),
        model=bindparam("v_model"),
    )
    .returning(*EXECUTIONS.c)
)


_append_outbox = schedule_sql.append_outbox


# A connection idle longer than this is pinged before use (a database restart while the
# node was quiet leaves every pooled connection dead). A busy pool skips the ping: three
# round trips per transaction otherwise; a connection that dies under load fails its
# statement, which invalidates the whole pool so the next checkouts reconnect.
PING_AFTER_IDLE_SECONDS = 5.0
# While the database is not there, a connection is asked for again with a growing delay
# for this long (a restart takes a second or two) before the caller gets a 503.
RECONNECT_WINDOW_SECONDS = 2.5
RECONNECT_FIRST_DELAY_SECONDS = 0.05


def _note_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["idle_since"] = time.monotonic()


def _check_on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
    """Replace a pooled connection that is known dead (free: asyncpg saw the server close
    it, as every server restart does) or idle long enough to be doubted (one round trip)."""
    driver_connection = getattr(dbapi_connection, "_connection", None)
    if driver_connection is not None and driver_connection.is_closed():
        raise DisconnectionError("pooled connection was closed by the server")  # the pool reconnects
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
        return
    try:
        dbapi_connection.ping()
    except Exception as exc:  # any failure means: not this connection
        raise DisconnectionError(f"pooled connection is dead: {exc}") from exc  # the pool reconnects


@functools.cache
def _head_revision() -> str | None:
    """The newest migration's revision: the scripts are part of the package, so they are
    read once per process (Alembic parses every one of them to answer)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _tune_sqlite(dbapi_connection: Any, _: Any) -> None:
    # WAL lets readers and the single writer work at once; a busy timeout instead of
    # 'database is locked' errors when two writers meet; foreign keys on, as on PostgreSQL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _delivery_values(delivery: WebhookDelivery) -> dict[str, Any]:
    values = delivery.model_dump(exclude={"attempts"})
    values["attempts"] = [attempt.model_dump(mode="json") for attempt in delivery.attempts]
    return values


def _delivery_from(row: Any) -> WebhookDelivery:
    return WebhookDelivery(
        execution_id=row.execution_id,
        url=row.url,
        attempts=[WebhookAttempt.model_validate(attempt) for attempt in row.attempts],
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        delivered_at=row.delivered_at,
        gave_up_at=row.gave_up_at,
    )
