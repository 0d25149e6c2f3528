"""SQLite's lean write path (`SQLEngine._sqlite_hop`: the journal's steps, an execution's
create, start and end, the outbox's marks): each write is ONE trip to aiosqlite's thread
(SQLAlchemy's adapter made four per statement and one per commit: about thirty an
invocation, 40% of embedded's CPU per invocation); what it stores is what SQLAlchemy's own
execution of the same statement stores, column by column; and a batch it writes lands whole
or not at all, the connection left fit for the next."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite
import pytest
from sqlalchemy.exc import IntegrityError

from agentrunner.adapters.state.executions_statements import execution_params, execution_statement
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.adapters.state.steps_sql import step_params, step_upsert
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.steps import JournalStepKind, JournalStepStatus, Step
from tests.contract.test_state_store import full_execution

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


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The calls run on aiosqlite's thread, by name, as they are made."""
    made: list[str] = []
    original: Callable[..., Awaitable[Any]] = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        made.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return made


async def _one_trip(trips: list[str], operation: Awaitable[Any]) -> Any:
    before = len(trips)
    result = await operation
    assert trips[before:] == ["run"]  # sqlite_hop.run: the statements and the commit
    return result


def _execution(execution_id: str, **fields: Any) -> Execution:
    return Execution(execution_id=execution_id, agent="writer", trace_id=f"t-{execution_id}", **fields)


async def test_an_invocations_writes_make_one_trip_each(store: SQLStateStore, trips: list[str]) -> None:
    created = Event(topic="agent.writer.invoke", payload={"execution_id": "e-1"}, trace_id="t-e-1")
    await _one_trip(trips, store.create_execution(_execution("e-1"), events=[created]))
    started = await _one_trip(trips, store.start_execution("e-1", worker="w", provider="echo", model="echo"))
    ended = started.model_copy(update={"status": ExecutionStatus.SUCCEEDED, "output": "hi"})
    finished = Event(topic="execution.finished.writer", payload={"execution_id": "e-1"}, trace_id="t-e-1")
    step = _step("e-1", 1, {"text": "hi"})
    await _one_trip(
        trips,
        store.save_execution(ended, events=[finished], only_if=frozenset({ExecutionStatus.RUNNING}), steps=[step]),
    )
    pending = await store.pending_events()
    assert {entry.event.topic for entry in pending} == {created.topic, finished.topic}
    await _one_trip(trips, store.mark_published([entry.id for entry in pending]))

    assert await store.pending_events() == []
    stored = await store.get_execution("e-1")
    assert (stored.status, stored.output, stored.worker, stored.attempts) == (ExecutionStatus.SUCCEEDED, "hi", "w", 1)
    assert await store.steps("e-1") == [step]


async def _execution_row(store: SQLStateStore, execution_id: str) -> dict[str, Any]:
    """An execution's row as SQLite holds it (no SQLAlchemy type on the way back), with the
    storage class of each value."""
    async with store._session() as connection:
        result = await connection.exec_driver_sql("SELECT * FROM executions WHERE execution_id = ?", (execution_id,))
        row = result.mappings().one()
    return {key: (value, type(value).__name__) for key, value in row.items() if key not in ("execution_id", "trace_id")}


async def test_an_execution_written_in_one_trip_is_stored_as_sqlalchemy_stores_it(store: SQLStateStore) -> None:
    fields = full_execution(output="partial answer " + "é" * 3000).model_dump(
        exclude={"execution_id", "trace_id", "agent"}
    )
    await store.create_execution(_execution("lean", **fields))
    async with store._session(write=True) as connection:
        await connection.execute(
            execution_statement(True, None), execution_params(_execution("sqlalchemy", **fields), None)
        )
    assert await _execution_row(store, "lean") == await _execution_row(store, "sqlalchemy")

    # And an update of every column (an execution's end).
    changed = fields | {"status": ExecutionStatus.SUCCEEDED, "output": "done", "error": None, "attempts": 4}
    await store.save_execution(_execution("lean", **changed))
    async with store._session(write=True) as connection:
        await connection.execute(
            execution_statement(False, None), execution_params(_execution("sqlalchemy", **changed))
        )
    assert await _execution_row(store, "lean") == await _execution_row(store, "sqlalchemy")
    assert (await store.get_execution("lean")).model_dump() == _execution("lean", **changed).model_dump()


async def test_starts_and_ends_asked_for_together_go_in_one_trip(store: SQLStateStore, trips: list[str]) -> None:
    ids = [f"g-{i}" for i in range(10)]
    for execution_id in ids:
        await store.create_execution(_execution(execution_id))

    before = len(trips)
    started = await asyncio.gather(
        *(store.start_execution(execution_id, worker="w", provider="echo", model="echo") for execution_id in ids)
    )
    assert [execution.execution_id for execution in started] == ids
    assert len(trips) - before <= 2  # not ten: those asked for while one is written go together

    before = len(trips)
    running = frozenset({ExecutionStatus.RUNNING})
    ended = [execution.model_copy(update={"status": ExecutionStatus.SUCCEEDED}) for execution in started]
    await asyncio.gather(*(store.save_execution(execution, only_if=running) for execution in ended))
    assert len(trips) - before <= 2
    assert {(await store.get_execution(execution_id)).status for execution_id in ids} == {ExecutionStatus.SUCCEEDED}


async def test_a_write_at_fault_in_a_group_fails_alone(store: SQLStateStore) -> None:
    for execution_id in ("a", "b", "c"):
        await store.create_execution(_execution(execution_id))
    taken = Event(topic="agent.writer.invoke", payload={}, trace_id="t")
    await store.save_execution(_execution("a"), events=[taken])

    # Three ends at once: b's event reuses an outbox id (a duplicate key), c's is sound.
    fine = Event(topic="execution.finished.writer", payload={"execution_id": "c"}, trace_id="t-c")
    ends = await asyncio.gather(
        store.save_execution(_execution("a", status=ExecutionStatus.FAILED)),
        store.save_execution(_execution("b", status=ExecutionStatus.SUCCEEDED), events=[taken]),
        store.save_execution(_execution("c", status=ExecutionStatus.SUCCEEDED), events=[fine]),
        return_exceptions=True,
    )
    assert ends[0] is None
    assert isinstance(ends[1], IntegrityError)
    assert ends[2] is None
    assert (await store.get_execution("b")).status is ExecutionStatus.QUEUED  # nothing of it written
    assert (await store.get_execution("c")).status is ExecutionStatus.SUCCEEDED
    assert {entry.event.event_id for entry in await store.pending_events()} == {taken.event_id, fine.event_id}
