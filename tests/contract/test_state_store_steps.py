"""StepJournal contract: the journal of execution steps on every database (SQLite,
PostgreSQL): a step written under its key replaces what the key held, steps come back in
order with their outcome, writes made at once all land, an execution created with steps
(a replay's) has them only if it was recorded, and the retention purge takes an
execution's journal with it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from agentrunner.domain.errors import ConflictError
from agentrunner.domain.event import Event, new_id
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.steps import JournalStepKind, JournalStepStatus, Step
from agentrunner.ports.retention import PurgeKind
from agentrunner.ports.state import IdempotencyClaim, IdempotencyKeyTakenError, StateStore
from tests.contract.test_retention import CUTOFF, OLD, RECENT, Stores

AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _step(execution_id: str, seq: int, *, generation: int = 1, **fields: object) -> Step:
    values: dict[str, object] = {
        "execution_id": execution_id,
        "generation": generation,
        "seq": seq,
        "kind": JournalStepKind.TOOL,
        "name": "kit__add",
        "status": JournalStepStatus.STARTED,
        "started_at": AT + timedelta(seconds=seq),
    }
    return Step.model_validate(values | fields)


async def test_a_step_written_again_under_its_key_replaces_the_first(state_store: StateStore) -> None:
    started = _step("e1", 2, outcome={"call_id": "c", "arguments": {"a": 1}})
    await state_store.record_step(started)
    ended = started.model_copy(
        update={
            "status": JournalStepStatus.SUCCEEDED,
            "outcome": {"call_id": "c", "arguments": {"a": 1}, "result": "é" * 3000, "duration_ms": 12.5},
            "finished_at": AT + timedelta(seconds=3),
            "replayed": True,
        }
    )
    await state_store.record_step(ended)

    assert await state_store.steps("e1") == [ended]


async def test_steps_come_back_by_generation_then_seq_and_only_the_executions_own(state_store: StateStore) -> None:
    model = {"kind": JournalStepKind.MODEL, "name": "gpt-4o", "status": JournalStepStatus.SUCCEEDED}
    steps = [
        _step("e1", 1, generation=2, **model, outcome={"text": "", "usage": {"input_tokens": 3, "output_tokens": 1}}),
        _step("e1", 3, generation=1),
        _step("e1", 1, generation=1, **model, outcome={"cost_usd": 0.25}),
        _step("e2", 1),
    ]
    for step in steps:
        await state_store.record_step(step)

    found = await state_store.steps("e1")

    assert [(s.generation, s.seq) for s in found] == [(1, 1), (1, 3), (2, 1)]
    assert found[0].cost_usd == 0.25
    assert found[2].usage is not None
    assert found[2].usage.input_tokens == 3
    assert await state_store.steps("nobody") == []


async def test_steps_written_at_once_all_land(state_store: StateStore) -> None:
    steps = [_step(f"e{i % 5}", i) for i in range(60)]  # grouped by the store into few transactions

    await asyncio.gather(*(state_store.record_step(step) for step in steps))

    found = [s for i in range(5) for s in await state_store.steps(f"e{i}")]
    assert sorted((s.execution_id, s.seq) for s in found) == sorted((s.execution_id, s.seq) for s in steps)


def _new(execution_id: str) -> Execution:
    return Execution(execution_id=execution_id, agent="a", trace_id=new_id(), created_at=datetime.now(UTC))


async def test_an_execution_created_with_steps_has_them_and_a_refused_one_writes_none(state_store: StateStore) -> None:
    claim = IdempotencyClaim(key="k-1", fingerprint="fp", expired_before=datetime.now(UTC) - timedelta(days=1))
    own = [_step("e1", 1, outcome={"n": 1}), _step("e1", 2)]
    await state_store.create_execution(_new("e1"), steps=own, idempotency=claim)
    await state_store.create_execution(_new("e2"), events=[Event(topic="invoke.a", payload={}, trace_id="t")])

    # Refused: an id taken (its journal is not overwritten), a key taken.
    with pytest.raises(ConflictError):
        await state_store.create_execution(_new("e1"), steps=[_step("e1", 1, outcome={"n": 2}), _step("e1", 3)])
    with pytest.raises(IdempotencyKeyTakenError):
        await state_store.create_execution(_new("e3"), steps=[_step("e3", 1)], idempotency=claim)
    # Several at once (grouped into one transaction), one of them refused.
    results = await asyncio.gather(
        *(state_store.create_execution(_new(f"g{n}"), steps=[_step(f"g{n}", 1), _step(f"g{n}", 2)]) for n in range(4)),
        state_store.create_execution(_new("e2"), steps=[_step("e2", 1)]),
        return_exceptions=True,
    )

    assert await state_store.steps("e1") == own
    assert await state_store.steps("e3") == []
    assert await state_store.steps("e2") == []
    assert results[:4] == [None] * 4
    assert isinstance(results[4], ConflictError)
    assert [len(await state_store.steps(f"g{n}")) for n in range(4)] == [2] * 4


async def test_the_purge_takes_an_executions_journal_with_it(retention_stores: Stores) -> None:
    store = await retention_stores()
    old, recent = (
        Execution(
            execution_id=new_id(), agent="a", status=ExecutionStatus.SUCCEEDED, trace_id=new_id(), created_at=created
        )
        for created in (OLD, RECENT)
    )
    for execution in (old, recent):
        await store.create_execution(execution)
        await store.record_step(_step(execution.execution_id, 1))

    assert await store.purge(PurgeKind.EXECUTIONS, before=CUTOFF, limit=10) == 1

    assert await store.steps(old.execution_id) == []
    assert len(await store.steps(recent.execution_id)) == 1


async def test_steps_saved_with_an_execution_land_only_when_it_is_written(state_store: StateStore) -> None:
    """A run's last answer rides on its end (`save_execution(steps=...)`): written with it,
    with or without events, replacing what the key held; not written when the save loses
    (a conditional save over an execution that ended elsewhere)."""
    running = Execution(execution_id="e1", agent="a", status=ExecutionStatus.RUNNING, trace_id="t")
    await state_store.create_execution(running)
    await state_store.record_step(_step("e1", 1))  # a tool's start, replaced below
    model: dict[str, object] = {"kind": JournalStepKind.MODEL, "name": "gpt-4o", "status": JournalStepStatus.SUCCEEDED}
    answers = [
        _step("e1", 1, finished_at=AT, outcome={"call_id": "c", "arguments": {}, "result": "ö"}),
        _step("e1", 2, generation=1, **model, outcome={"text": "done", "cost_usd": 0.5}),
    ]
    finished = running.model_copy(update={"status": ExecutionStatus.SUCCEEDED, "output": "done"})
    unfinished = frozenset({ExecutionStatus.QUEUED, ExecutionStatus.RUNNING})
    event = Event(topic="execution.finished.a", trace_id="t")

    await state_store.save_execution(finished, events=[event], only_if=unfinished, steps=answers)
    with pytest.raises(ConflictError):
        await state_store.save_execution(finished, only_if=unfinished, steps=[_step("e1", 3, generation=1, **model)])
    other = Execution(execution_id="e2", agent="a", status=ExecutionStatus.RUNNING, trace_id="t")
    await state_store.create_execution(other)
    await state_store.save_execution(other, steps=[_step("e2", 1, generation=1, **model, outcome={"text": "alone"})])

    assert await state_store.get_execution("e1") == finished
    assert await state_store.steps("e1") == answers
    assert [step.outcome for step in await state_store.steps("e2")] == [{"text": "alone"}]
    assert [entry.event.event_id for entry in await state_store.pending_events()] == [event.event_id]
