"""SQLite's lean path: the statements of one write and its commit in ONE trip to aiosqlite's
thread, on its sqlite3 connection straight.

SQLAlchemy's async adapter makes four trips per statement (cursor, execute, fetch or
rowcount, cursor close) and one more for the commit, each a thread hop and a wake-up of the
event loop: an invocation's four writes made about thirty. Here a write is a function run
on that thread (`run`) with a `Transaction` that executes compiled statements: compiled once
per engine, their parameters and results through the column types' own processors, so the
rows written and read are the ones SQLAlchemy would write and read. Errors are raised as
SQLAlchemy raises them (`DBAPIError`'s subclass: an `IntegrityError` for a duplicate key),
after the rollback.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

from agentrunner.adapters.state.rows import AttributeRow

T = TypeVar("T")

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement's SQL text for SQLite, its parameters' names in order with their types'
    bind processors, and the columns it returns with their result processors."""

    sql: str
    compiled: SQLCompiler
    binds: tuple[tuple[str, Processor], ...]
    columns: tuple[tuple[str, Processor], ...]
    constants: bool  # values the statement holds itself (a status it sets) are among the binds

    @classmethod
    def of(cls, statement: Executable, dialect: Dialect) -> Compiled:
        compiled = cast("SQLCompiler", cast("ClauseElement", statement).compile(dialect=dialect))
        names = compiled.positiontup or []
        binds = tuple((name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names)
        # Its RETURNING columns (the writes here read no others). Not `exported_columns`: read
        # on a statement without RETURNING it is memoized empty, and a `.returning()` copy of
        # the statement (a cached one, reused) would keep it empty.
        returned = getattr(statement, "_returning", ())
        columns = tuple((c.key, c.type.dialect_impl(dialect).result_processor(dialect, None)) for c in returned)
        constants = any(compiled.binds[name].value is not None for name in names)
        return cls(compiled.string, compiled, binds, columns, constants)

    def arguments(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        values = self.compiled.construct_params(dict(params)) if self.constants else params
        assert values is not None
        return tuple(values[name] if process is None else process(values[name]) for name, process in self.binds)

    def row(self, values: Sequence[Any]) -> AttributeRow:
        return AttributeRow({key: v if p is None else p(v) for (key, p), v in zip(self.columns, values, strict=True)})


class Transaction:
    """The statements of one write, on aiosqlite's thread. The sqlite3 module opens the
    transaction before the first INSERT or UPDATE (as for SQLAlchemy's writes); `run`
    commits it or rolls it back."""

    def __init__(self, db: sqlite3.Connection, dialect: Dialect, cache: MutableMapping[Executable, Compiled]) -> None:
        self._db = db
        self._dialect = dialect
        self._cache = cache

    def _compiled(self, statement: Executable) -> Compiled:
        compiled = self._cache.get(statement)
        if compiled is None:
            compiled = self._cache[statement] = Compiled.of(statement, self._dialect)
        return compiled

    def rowcount(self, statement: Executable, params: Mapping[str, Any]) -> int:
        """The rows `statement` changed."""
        compiled = self._compiled(statement)
        arguments = compiled.arguments(params)
        with _translated(compiled.sql, arguments):
            return self._db.execute(compiled.sql, arguments).rowcount

    def many(self, statement: Executable, rows: Sequence[Mapping[str, Any]]) -> int:
        """`statement` once per row of parameters; the rows it changed."""
        if not rows:
            return 0
        compiled = self._compiled(statement)
        arguments = [compiled.arguments(row) for row in rows]
        with _translated(compiled.sql, arguments):
            return self._db.executemany(compiled.sql, arguments).rowcount

    def first(self, statement: Executable, params: Mapping[str, Any]) -> AttributeRow | None:
        """The first row `statement` returns (every row is read: SQLite commits none of a
        statement whose rows are still being read); None when it returns none."""
        compiled = self._compiled(statement)
        arguments = compiled.arguments(params)
        with _translated(compiled.sql, arguments):
            rows = self._db.execute(compiled.sql, arguments).fetchall()
        return compiled.row(rows[0]) if rows else None


def run(
    db: sqlite3.Connection,
    dialect: Dialect,
    cache: MutableMapping[Executable, Compiled],
    work: Callable[[Transaction], T],
) -> T:
    """On aiosqlite's thread: `work` and the commit, or nothing of it."""
    try:
        result = work(Transaction(db, dialect, cache))
        with _translated("COMMIT", ()):
            db.commit()
        return result
    except BaseException:
        db.rollback()
        raise


class _translated:
    """sqlite3's errors raised as SQLAlchemy raises them for the same statement."""

    __slots__ = ("_arguments", "_sql")

    def __init__(self, sql: str, arguments: Any) -> None:
        self._sql = sql
        self._arguments = arguments

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: Any) -> None:
        if isinstance(error, sqlite3.Error):
            raise DBAPIError.instance(self._sql, self._arguments, error, sqlite3.Error) from error
