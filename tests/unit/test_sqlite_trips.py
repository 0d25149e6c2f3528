"""SQLite's hot writes each make ONE trip to aiosqlite's thread (`sqlite_hop`): an execution's
create, start and end (with its outbox event and steps) and the outbox's marks, where
SQLAlchemy's adapter made four per statement and one per commit (about thirty an invocation,
each a thread hop and a wake-up of the event loop: 40% of embedded's CPU per invocation)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiosqlite
import pytest

from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionStatus, utcnow
from agentrunner.domain.steps import JournalStepKind, JournalStepStatus, Step


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[SQLStateStore]:
    store = SQLStateStore(sqlite_url)
    await store.start()
    yield store
    await store.close()


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


def _event(execution_id: str, topic: str) -> Event:
    return Event(topic=topic, data={"execution_id": execution_id}, trace_id="t-1")


async def test_an_invocations_writes_make_one_trip_each(store: SQLStateStore, trips: list[str]) -> None:
    execution = Execution(execution_id="e-1", agent="writer", trace_id="t-1")
    created = _event("e-1", "agent.writer.invoke")
    await _one_trip(trips, store.create_execution(execution, events=[created]))
    started = await _one_trip(trips, store.start_execution("e-1", worker="w", provider="echo", model="echo"))
    step = Step(
        execution_id="e-1",
        generation=1,
        seq=1,
        kind=JournalStepKind.MODEL,
        name="echo",
        status=JournalStepStatus.SUCCEEDED,
        outcome={"text": "hi"},
        started_at=utcnow(),
        finished_at=utcnow(),
    )
    ended = started.model_copy(update={"status": ExecutionStatus.SUCCEEDED, "output": "hi"})
    finished = _event("e-1", "execution.completed")
    saving = store.save_execution(ended, events=[finished], only_if=frozenset({ExecutionStatus.RUNNING}), steps=[step])
    await _one_trip(trips, saving)
    pending = await store.pending_events()
    assert {entry.event.topic for entry in pending} == {"agent.writer.invoke", "execution.completed"}
    await _one_trip(trips, store.mark_published([entry.id for entry in pending]))

    # What the trips wrote is what the store reads back.
    assert await store.pending_events() == []
    stored = await store.get_execution("e-1")
    assert (stored.status, stored.output, stored.worker, stored.attempts) == (ExecutionStatus.SUCCEEDED, "hi", "w", 1)
    assert [s.outcome for s in await store.steps("e-1")] == [{"text": "hi"}]
