"""SQLite's lean write path (`SQLEngine._sqlite_write_many`, the journal's steps): what it
stores is what SQLAlchemy's own execution of the same statement stores, column by column,
and a batch it writes lands whole or not at all, the connection left fit for the next."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.adapters.state.steps_sql import step_params, step_upsert
from agentrunner.domain.steps import JournalStepKind, JournalStepStatus, Step

AT = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
COLUMNS = "kind, name, status, outcome, replayed, started_at, finished_at"


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[SQLStateStore]:
    store = SQLStateStore(sqlite_url)
    await store.start()
    yield store
    await store.close()


def _step(execution_id: str, seq: int, outcome: dict[str, Any], **fields: Any) -> Step:
    return Step(
        execution_id=execution_id,
        generation=1,
        seq=seq,
        kind=JournalStepKind.TOOL,
        name="kit__add",
        status=JournalStepStatus.SUCCEEDED,
        outcome=outcome,
        replayed=True,
        started_at=AT,
        finished_at=AT + timedelta(seconds=1),
        **fields,
    )


async def _stored(store: SQLStateStore, execution_id: str) -> list[tuple[Any, ...]]:
    """The rows of an execution's steps as SQLite holds them (no SQLAlchemy type on the way
    back), a compressed outcome decompressed (gzip stamps the time it ran)."""
    async with store._session() as connection:
        result = await connection.exec_driver_sql(
            f"SELECT seq, {COLUMNS}, typeof(started_at) FROM execution_steps WHERE execution_id = ? ORDER BY seq",
            (execution_id,),
        )
        rows = result.all()
    return [
        tuple(
            gzip.decompress(value) if isinstance(value, bytes) and value[:2] == b"\x1f\x8b" else value for value in row
        )
        for row in rows
    ]


@pytest.mark.parametrize(
    "outcome",
    [
        {"call_id": "c", "arguments": {"a": 1}, "result": "é", "duration_ms": 12.5},
        {"call_id": "c", "result": "é" * 5000},  # compressed
        {"big": 2**70},  # past orjson: the standard library's JSON, marked
    ],
    ids=["small", "compressed", "stdlib-json"],
)
async def test_the_lean_write_stores_what_sqlalchemy_stores(store: SQLStateStore, outcome: dict[str, Any]) -> None:
    lean = _step("lean", 1, outcome)
    sqlalchemy = _step("sqlalchemy", 1, outcome)

    await store.record_step(lean)
    async with store._session(write=True) as connection:
        await connection.execute(step_upsert(True), step_params(sqlalchemy))

    lean_rows, sqlalchemy_rows = await _stored(store, "lean"), await _stored(store, "sqlalchemy")
    assert lean_rows == sqlalchemy_rows
    assert lean_rows[0][-1] == "text"
    assert await store.steps("lean") == [lean]


async def test_a_lean_batch_that_fails_writes_none_of_it_and_the_next_write_lands(store: SQLStateStore) -> None:
    good = step_params(_step("e1", 1, {"result": "ok"}))
    broken = step_params(_step("e1", 2, {"result": "ok"})) | {"v_kind": None}  # NOT NULL

    with pytest.raises(IntegrityError):
        await store._sqlite_write_many(step_upsert(True), [good, broken])

    assert await store.steps("e1") == []
    after = _step("e1", 3, {"result": "after"})
    await store.record_step(after)
    assert await store.steps("e1") == [after]
