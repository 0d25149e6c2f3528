"""The engine under every SQL store module: SQLAlchemy 2 async over SQLite (aiosqlite, the
embedded mode) or PostgreSQL (asyncpg, the distributed one). Connections, transactions and
the reconnect window live here, and driver errors are translated here and nowhere else."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

from sqlalchemy import Connection, Dialect, event, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import greenlet_spawn

from agentrunner.adapters.state import sqlite_hop
from agentrunner.adapters.state.errors import as_outage
from agentrunner.adapters.state.migrations import HEAD
from agentrunner.adapters.state.rows import AttributeRow
from agentrunner.adapters.state.urls import alembic_config, prepare_sqlite_folder
from agentrunner.domain.errors import ConfigError, DependencyUnavailableError
from agentrunner.domain.redaction import mask_url
from agentrunner.logs import get_logger

log = get_logger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C")


def in_flight(exc: DependencyUnavailableError) -> bool:
    """The connection died under the operation (not before it): it may run again on a new one."""
    return bool(exc.context.get("reconnect")) and not exc.context.get("waited")


def idempotent(operation: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """An operation that may run twice (a read, or a write idempotent by key) tried once
    more when its connection died under it: a restart kills every pooled connection, and
    the retry takes a new one (waiting out the restart in `_connection`)."""

    @functools.wraps(operation)
    async def retried(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await operation(*args, **kwargs)
        except DependencyUnavailableError as exc:
            if not in_flight(exc):
                raise
        return await operation(*args, **kwargs)

    return retried


class SQLEngine:
    """The shared engine of the SQL state store: the pool, the schema check at start, and
    one connection per operation with driver errors translated (`errors.as_outage`). Each
    aggregate's module adds its operations as a mixin over this class (`sql.SQLStateStore`
    puts them together), so every one of them runs on the same engine and a write that
    spans aggregates is one transaction.

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
        # Operations under way (from their check that the store is open to their
        # connection's return), and set whenever there is none: what `close` waits for.
        self._in_use = 0
        self._idle = asyncio.Event()
        self._hops: dict[Executable, sqlite_hop.Compiled] = {}  # see `_sqlite_hop`
        self._lean: dict[Executable, _Lean] = {}  # see `_lean_run`

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
        if _current_revision(connection) == HEAD:
            return
        from alembic import command  # noqa: PLC0415 - only to migrate: see migrations.HEAD

        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    def _require_head(self, connection: Connection) -> None:
        current = _current_revision(connection)
        if current != HEAD:
            raise ConfigError(
                f"database {self._where} is at schema revision {current or 'none'}, this agentrunner needs "
                f"{HEAD}: run `agentrunner db upgrade`"
            )

    async def close(self) -> None:
        """Refuse new operations, let those under way end (`CLOSE_WAIT_SECONDS` at most: a
        task its owner did not wait for, a group commit's batch), then close every
        connection. Closed under an operation, a connection would be left with it under
        way, and SQLite's thread would answer an event loop that may be gone by then."""
        engine, self._engine, self._autocommit = self._engine, None, None
        if engine is None:
            return
        if self._in_use:
            self._idle.clear()
            try:
                async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                    await self._idle.wait()  # no operation starts once closing: it is set for good
            except TimeoutError:
                log.warning(
                    "state store closed with operations still under way",
                    operations=self._in_use,
                    waited_seconds=CLOSE_WAIT_SECONDS,
                )
        await engine.dispose()

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
        async with self._operation():
            connection = await self._connection(engine.connect, patient=patient)
            try:
                if atomic or (write and self.is_sqlite):
                    async with connection.begin():
                        yield connection
                else:
                    yield connection
            finally:
                await connection.close()

    @asynccontextmanager
    async def _operation(self) -> AsyncIterator[None]:
        """An operation under way, for `close` to wait for, with driver errors translated."""
        self._in_use += 1
        try:
            yield
        except Exception as exc:
            outage = as_outage(exc, self._where)
            if outage is None:
                raise
            raise outage from exc
        finally:
            self._in_use -= 1
            if not self._in_use:
                self._idle.set()

    async def _sqlite_hop(self, work: Callable[[sqlite_hop.Transaction], R]) -> R:
        """`work`'s statements and the commit in ONE trip to aiosqlite's thread, on the pool's
        only connection (which is what serializes SQLite's writes: it waits its turn), with
        no SQLAlchemy connection around it: SQLite's lean path for the hot writes (see
        `sqlite_hop`). A function run on that thread, so it must not await."""
        engine = self._engine
        if engine is None:
            raise DependencyUnavailableError("the state store is not started (or was closed)")
        async with self._operation():
            pooled = await engine.raw_connection()
            try:
                driver: Any = pooled.driver_connection  # aiosqlite's Connection
                # aiosqlite runs a callable on its thread with `_execute` (its own methods are
                # that call around one sqlite3 method each).
                return cast("R", await driver._execute(sqlite_hop.run, driver._conn, engine.dialect, self._hops, work))
            finally:
                # Back to the pool at once: no reset to await (`pool_reset_on_return=None`,
                # and `run` ended its transaction either way).
                pooled.close()

    async def _sqlite_write_many(self, statement: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
        """`statement` run once per row of parameters, in one transaction committed before
        this returns, in one trip (`_sqlite_hop`): the journal's steps."""
        await self._sqlite_hop(lambda transaction: transaction.many(statement, rows))

    async def _lean_rowcount(self, statement: Executable, params: Mapping[str, Any]) -> int:
        """The rows `statement` changed (`_lean_run`; PostgreSQL's: SQLite's hot writes take
        `_sqlite_hop`)."""
        rowcount, _ = await self._lean_run(statement, params, fetch=False)
        return rowcount

    async def _lean_first(self, statement: Executable, params: Mapping[str, Any]) -> Any | None:
        """The first row `statement` returns (its columns as attributes), None when it returns
        none (`_lean_run`; PostgreSQL's)."""
        _, row = await self._lean_run(statement, params, fetch=True)
        return row

    async def _lean_run(
        self, statement: Executable, params: Mapping[str, Any], *, fetch: bool
    ) -> tuple[int, Any | None]:
        """`statement` alone, as its own transaction (autocommit), on a pooled asyncpg
        connection straight: neither SQLAlchemy's connection around the pool's nor its
        execution around the statement. For the hot statements (an execution's create,
        start and end, the outbox's marks), whose round trip costs less CPU than SQLAlchemy
        spends around it (measured: two thirds of a statement's client CPU in its execution;
        a checkout and return through a connection 55-69 us, the pool's own 19-21 us). The
        statement is compiled once per engine and its parameters and result go through the
        column types' own processors, so what is written and read is what SQLAlchemy would
        write and read. The pool still replaces a dead connection on checkout, the reconnect
        window is `_session`'s, and driver errors are raised as SQLAlchemy raises them (a
        dead connection invalidated), so `errors.as_outage` and the callers (an
        `IntegrityError`) see what they saw. Nothing begins a transaction on the connection
        (asyncpg runs a statement outside one as its own), and the pool's reset on return
        has none to roll back."""
        engine = self._engine
        if engine is None:
            raise DependencyUnavailableError("the state store is not started (or was closed)")
        lean = self._lean.get(statement)
        if lean is None:
            lean = self._lean[statement] = _Lean.of(statement, engine.dialect)
        arguments = lean.arguments(params)
        async with self._operation():
            pooled = await self._connection(functools.partial(_pooled, engine), patient=True)
            driver: Any = pooled.driver_connection  # asyncpg's Connection
            try:
                if fetch:
                    if lean.columns is None:  # the result processors want the types the server answers with
                        prepared = await driver.prepare(lean.sql)
                        lean.read_as({attribute.name: attribute.type.oid for attribute in prepared.get_attributes()})
                    record = await driver.fetchrow(lean.sql, *arguments)
                    return 0, None if record is None else lean.row(record)
                return _rowcount(await driver.execute(lean.sql, *arguments)), None
            except Exception as error:
                translated = await _as_sqlalchemy_error(engine.dialect, pooled, lean.sql, arguments, error)
                if translated is error:
                    raise
                raise translated from error
            finally:
                await greenlet_spawn(pooled.close)  # a connection past the pool's size is closed: awaited

    async def _connection(self, connect: Callable[[], Awaitable[C]], *, patient: bool) -> C:
        """A connection from the pool, as `connect` gives it (an engine's `connect`, or its
        `raw_connection`; a dead pooled one is replaced on checkout: see
        `_check_on_checkout`), waiting out a short outage when `patient`."""
        deadline = time.monotonic() + (RECONNECT_WINDOW_SECONDS if patient else 0.0)
        delay = RECONNECT_FIRST_DELAY_SECONDS
        while True:
            try:
                return await connect()
            except Exception as exc:
                outage = as_outage(exc, self._where)
                if outage is None:
                    raise
                if time.monotonic() + delay > deadline:
                    outage.context["waited"] = patient  # `_read` need not wait again
                    raise outage from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            if self._engine is None:  # closed meanwhile: no new connection
                raise DependencyUnavailableError("the state store was closed")


# `close` waits at most this long for the operations under way to end.
CLOSE_WAIT_SECONDS = 5.0
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


def _current_revision(connection: Connection) -> str | None:
    """The schema revision Alembic recorded in the database (None before the first
    migration), read as Alembic reads it: its version table's one row."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    revisions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return revisions[0] if len(revisions) == 1 else ",".join(sorted(revisions)) or None


@dataclass(slots=True)
class _Lean:
    """A statement as asyncpg takes it: its SQL text, its parameters' names in order with
    their types' bind processors, and (once `read_as` was told the types the server answers
    with) its result columns with their result processors."""

    sql: str
    statement: Executable
    dialect: Dialect
    compiled: SQLCompiler
    binds: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    columns: tuple[tuple[str, Callable[[Any], Any] | None], ...] | None = None

    @classmethod
    def of(cls, statement: Executable, dialect: Dialect) -> _Lean:
        compiled = cast("SQLCompiler", cast("ClauseElement", statement).compile(dialect=dialect))
        names = compiled.positiontup or []
        binds = tuple((name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names)
        return cls(compiled.string, statement, dialect, compiled, binds)

    def read_as(self, oids: Mapping[str, int]) -> None:
        """Set the result processors, from the type oid of each column the server returns."""
        returned = getattr(self.statement, "exported_columns", ())  # RETURNING, or a SELECT's columns
        self.columns = tuple(
            (column.key, column.type.dialect_impl(self.dialect).result_processor(self.dialect, oids.get(column.key)))
            for column in returned
        )

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        # The values the statement holds itself (a status it sets) come with the caller's.
        values = self.compiled.construct_params(dict(params)) or {}
        return [values[name] if process is None else process(values[name]) for name, process in self.binds]

    def row(self, record: Any) -> Any:
        return AttributeRow({key: record[key] if p is None else p(record[key]) for key, p in self.columns or ()})


def _rowcount(status: str) -> int:
    """The rows a command changed, from its status ("INSERT 0 2", "UPDATE 1")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


async def _pooled(engine: AsyncEngine) -> PoolProxiedConnection:
    """The pool's own connection (`AsyncEngine.raw_connection`), with a driver error met while
    connecting raised as SQLAlchemy's `connect` raises it (a `DBAPIError`, invalidated when
    the server is gone): the pool alone lets it out bare (measured: "the database system is
    shutting down" during a restart), which `errors.as_outage` would not know for an outage."""
    dialect = engine.dialect
    try:
        return await engine.raw_connection()
    except dialect.loaded_dbapi.Error as error:
        gone = bool(dialect.is_disconnect(error, None, None))
        raise DBAPIError.instance(
            None, None, error, dialect.loaded_dbapi.Error, connection_invalidated=gone, dialect=dialect
        ) from error


async def _as_sqlalchemy_error(
    dialect: Dialect, pooled: PoolProxiedConnection, sql: str, arguments: list[Any], error: Exception
) -> Exception:
    """`error` (asyncpg's) as SQLAlchemy raises it for the same statement: translated by the
    pooled connection's adapter, wrapped in `DBAPIError`'s subclass for it, and the
    connection invalidated when it is gone. An error the adapter does not translate (an
    OSError) is returned as it is."""
    adapted: Any = pooled.dbapi_connection
    try:
        adapted._handle_exception(error)  # raises the translation (or `error` itself)
    except dialect.loaded_dbapi.Error as translated:
        gone = bool(dialect.is_disconnect(translated, adapted, None))
        if gone:
            await greenlet_spawn(pooled.invalidate, translated)  # closes it: awaited
        return DBAPIError.instance(
            sql, arguments, translated, dialect.loaded_dbapi.Error, connection_invalidated=gone, dialect=dialect
        )
    except Exception as untranslated:  # noqa: BLE001 - returned to be raised by the caller
        return untranslated
    return error


def _tune_sqlite(dbapi_connection: Any, _: Any) -> None:
    # WAL lets readers and the single writer work at once; a busy timeout instead of
    # 'database is locked' errors when two writers meet; foreign keys on, as on PostgreSQL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
