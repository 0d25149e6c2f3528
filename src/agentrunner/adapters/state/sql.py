"""StateStore on SQLAlchemy 2 async: SQLite (aiosqlite) for the embedded mode,
PostgreSQL (asyncpg) for the distributed one. The only module that writes SQL."""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, select, tuple_
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from agentrunner.adapters.state.tables import Base, ExecutionRow
from agentrunner.domain.errors import (
    BadRequestError,
    ConfigError,
    ConflictError,
    DependencyUnavailableError,
    ExecutionNotFoundError,
)
from agentrunner.domain.execution import Execution, ExecutionError, ExecutionStatus, Usage
from agentrunner.ports import ExecutionPage


def _to_row(execution: Execution) -> dict[str, Any]:
    return {
        "execution_id": execution.execution_id,
        "agent": execution.agent,
        "status": execution.status.value,
        "input": execution.input,
        "session_id": execution.session_id,
        "output": execution.output,
        "error": execution.error.model_dump() if execution.error else None,
        "input_tokens": execution.usage.input_tokens,
        "output_tokens": execution.usage.output_tokens,
        "cost_usd": execution.cost_usd,
        "attempts": execution.attempts,
        "provider": execution.provider,
        "model": execution.model,
        "trace_id": execution.trace_id,
        "created_at": execution.created_at,
        "started_at": execution.started_at,
        "finished_at": execution.finished_at,
    }


def _from_row(row: ExecutionRow) -> Execution:
    return Execution(
        execution_id=row.execution_id,
        agent=row.agent,
        status=ExecutionStatus(row.status),
        input=row.input,
        session_id=row.session_id,
        output=row.output,
        error=ExecutionError.model_validate(row.error) if row.error else None,
        usage=Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens),
        cost_usd=row.cost_usd,
        attempts=row.attempts,
        provider=row.provider,
        model=row.model,
        trace_id=row.trace_id,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _encode_cursor(execution: Execution) -> str:
    raw = f"{execution.created_at.isoformat()}|{execution.execution_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    problem = BadRequestError(f"invalid cursor {cursor!r}: pass the next_cursor of a previous page")
    try:
        created_text, execution_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        created = datetime.fromisoformat(created_text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise problem from exc
    if created.tzinfo is None:
        raise problem
    return created, execution_id


class SQLStateStore:
    """StateStore over a SQLAlchemy async engine (see `ports.StateStore`)."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 20) -> None:
        self._url = make_url(url)
        self._pool_size = pool_size
        self._max_overflow = max_overflow
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[Any] | None = None

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite backend."""
        return self._url.get_backend_name() == "sqlite"

    async def start(self) -> None:
        if self.is_sqlite:
            if self._url.database and self._url.database != ":memory:":
                folder = Path(self._url.database).parent
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ConfigError(f"cannot create the SQLite folder {folder} (DATA_DIR): {exc}") from exc
            engine = create_async_engine(self._url)
            event.listen(engine.sync_engine, "connect", _tune_sqlite)
        else:
            engine = create_async_engine(
                self._url, pool_size=self._pool_size, max_overflow=self._max_overflow, pool_pre_ping=True
            )
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(Base.metadata.create_all)
        except (OperationalError, DBAPIError, OSError) as exc:
            raise DependencyUnavailableError(
                f"database {self._url.render_as_string(hide_password=True)} is not reachable: {exc}"
            ) from exc

    async def close(self) -> None:
        self._sessions = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    def _session_factory(self) -> async_sessionmaker[Any]:
        if self._sessions is None:
            raise DependencyUnavailableError("the state store is not started")
        return self._sessions

    async def ping(self) -> None:
        if self._engine is None:
            raise DependencyUnavailableError("the state store is not started")
        try:
            async with self._engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")
        except (OperationalError, DBAPIError, OSError) as exc:
            raise DependencyUnavailableError(f"database is not answering: {exc}") from exc

    async def create_execution(self, execution: Execution) -> None:
        async with self._session_factory().begin() as session:
            session.add(ExecutionRow(**_to_row(execution)))
            try:
                await session.flush()
            except IntegrityError as exc:
                raise ConflictError(f"execution {execution.execution_id} already exists") from exc

    async def save_execution(self, execution: Execution) -> None:
        async with self._session_factory().begin() as session:
            row = await session.get(ExecutionRow, execution.execution_id)
            if row is None:
                raise ExecutionNotFoundError(
                    f"execution {execution.execution_id} not found", execution_id=execution.execution_id
                )
            for key, value in _to_row(execution).items():
                setattr(row, key, value)

    async def get_execution(self, execution_id: str) -> Execution:
        async with self._session_factory()() as session:
            row = await session.get(ExecutionRow, execution_id)
            if row is None:
                raise ExecutionNotFoundError(f"execution {execution_id} not found", execution_id=execution_id)
            return _from_row(row)

    async def list_executions(
        self,
        *,
        agent: str | None = None,
        status: ExecutionStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ExecutionPage:
        if limit < 1:
            raise BadRequestError(f"limit must be at least 1, got {limit}")
        query = select(ExecutionRow)
        if agent:
            query = query.where(ExecutionRow.agent == agent)
        if status:
            query = query.where(ExecutionRow.status == status.value)
        if cursor:
            created, execution_id = _decode_cursor(cursor)
            query = query.where(tuple_(ExecutionRow.created_at, ExecutionRow.execution_id) < (created, execution_id))
        query = query.order_by(ExecutionRow.created_at.desc(), ExecutionRow.execution_id.desc()).limit(limit + 1)
        async with self._session_factory()() as session:
            rows = (await session.scalars(query)).all()
        items = [_from_row(row) for row in rows[:limit]]
        next_cursor = _encode_cursor(items[-1]) if len(rows) > limit and items else None
        return ExecutionPage(items=items, next_cursor=next_cursor)


def _tune_sqlite(dbapi_connection: Any, _: Any) -> None:
    # WAL lets readers and the single writer work at once; a busy timeout instead of
    # 'database is locked' errors when two writers meet.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
