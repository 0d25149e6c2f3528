"""StateStore contract, plan runs: what every backend (SQLite, PostgreSQL, either behind a
cache) must do the same way. Saves are conditional on the version read, so a resumed
worker and a late one, or an answer and a timeout, never both win."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from agentrunner.domain.errors import ConflictError, PlanRunNotFoundError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import ExecutionError, Usage
from agentrunner.domain.plan import (
    Clarification,
    ClarificationKind,
    ClarificationStatus,
    Plan,
    PlanRun,
    PlanRunStatus,
    StepRun,
    StepStatus,
)
from agentrunner.ports.state import StateStore

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PLAN = Plan.model_validate(
    {
        "steps": [
            {"id": "research", "agent": "researcher", "instruction": "find facts"},
            {"id": "write", "agent": "writer", "instruction": "write it up", "inputs": ["research"]},
        ]
    }
)


def _run(run_id: str = "run-1", **fields: object) -> PlanRun:
    values: dict[str, object] = {
        "id": run_id,
        "agent": "team",
        "task": {"prompt": "a report"},
        "trace_id": "trace-1",
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return PlanRun.model_validate(values)


async def test_a_created_run_reads_back_whole_at_version_1(state_store: StateStore) -> None:
    run = _run(origin={"source": "slack", "channel_id": "C1"}, state={"big": "x" * 2_000_000})
    created = await state_store.create_plan_run(run)
    stored = await state_store.get_plan_run("run-1")
    assert created.version == stored.version == 1
    assert stored == created
    assert stored.state["big"] == "x" * 2_000_000  # over 1 MB: compressed, transparently


async def test_a_duplicate_run_is_a_conflict(state_store: StateStore) -> None:
    await state_store.create_plan_run(_run())
    with pytest.raises(ConflictError, match="run-1 already exists"):
        await state_store.create_plan_run(_run())


async def test_an_unknown_run_is_not_found(state_store: StateStore) -> None:
    with pytest.raises(PlanRunNotFoundError, match="plan run nope not found"):
        await state_store.get_plan_run("nope")
    with pytest.raises(PlanRunNotFoundError):
        await state_store.save_plan_run(_run("nope", version=1))


async def test_save_writes_plan_steps_and_clarifications_in_plan_order(state_store: StateStore) -> None:
    run = await state_store.create_plan_run(_run())
    asked = Clarification(
        id="q1",
        run_id="run-1",
        step_id="write",
        question="Which tone?",
        kind=ClarificationKind.CHOICE,
        options=["formal", "casual"],
        default="formal",
        asked_at=T0,
        expires_at=T0 + timedelta(minutes=5),
    )
    steps = [
        StepRun(
            step_id="write",
            agent="writer",
            agent_version=3,
            status=StepStatus.NEEDS_CLARIFICATION,
            execution_id="e2",
            attempts=1,
        ),
        StepRun(
            step_id="research",
            agent="researcher",
            status=StepStatus.SUCCEEDED,
            execution_id="e1",
            output="facts",
            usage=Usage(input_tokens=10, output_tokens=3),
            cost_usd=0.25,
            attempts=1,
            started_at=T0,
            finished_at=T0 + timedelta(seconds=2),
        ),
    ]
    changed = run.model_copy(
        update={
            "status": PlanRunStatus.NEEDS_CLARIFICATION,
            "plan": PLAN,
            "state": {"research": "facts"},
            "steps": steps,
            "clarifications": [asked],
        }
    )
    saved = await state_store.save_plan_run(changed)
    stored = await state_store.get_plan_run("run-1")
    assert saved.version == stored.version == 2
    assert [step.step_id for step in stored.steps] == ["research", "write"]
    assert stored.step_run("research") == steps[1]
    assert stored.step_run("write") == steps[0]  # its agent's version too
    assert stored.clarifications == [asked]
    assert stored.plan == PLAN
    assert stored.status is PlanRunStatus.NEEDS_CLARIFICATION

    answered = asked.model_copy(update={"status": ClarificationStatus.ANSWERED, "answer": "formal"})
    finished = stored.model_copy(
        update={
            "status": PlanRunStatus.FAILED,
            "clarifications": [answered],
            "steps": [stored.steps[0]],
            "error": ExecutionError(code="step_failed", message="writer failed"),
            "result_json": {"summary": "partial", "steps": [1, 2]},
        }
    )
    await state_store.save_plan_run(finished)
    final = await state_store.get_plan_run("run-1")
    assert final.result_json == {"summary": "partial", "steps": [1, 2]}
    assert final.clarifications == [answered]
    assert [step.step_id for step in final.steps] == ["research"]
    assert final.error == ExecutionError(code="step_failed", message="writer failed")


async def test_a_save_over_a_stale_version_changes_nothing(state_store: StateStore) -> None:
    run = await state_store.create_plan_run(_run())
    await state_store.save_plan_run(run.model_copy(update={"status": PlanRunStatus.RUNNING}))
    with pytest.raises(ConflictError, match="changed meanwhile"):
        await state_store.save_plan_run(run.model_copy(update={"status": PlanRunStatus.REJECTED}))
    assert (await state_store.get_plan_run("run-1")).status is PlanRunStatus.RUNNING


async def test_concurrent_saves_of_one_version_from_two_stores_have_one_winner(
    state_store_factory: Callable[[], StateStore],
) -> None:
    first, second = state_store_factory(), state_store_factory()
    await first.start()
    await second.start()
    run = await first.create_plan_run(_run(status=PlanRunStatus.NEEDS_CLARIFICATION))
    outcomes = await asyncio.gather(
        first.save_plan_run(run.model_copy(update={"status": PlanRunStatus.RUNNING})),
        second.save_plan_run(run.model_copy(update={"status": PlanRunStatus.FAILED})),
        return_exceptions=True,
    )
    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["ConflictError", "PlanRun"]
    winner = next(outcome for outcome in outcomes if isinstance(outcome, PlanRun))
    assert (await first.get_plan_run("run-1")).status is winner.status


async def test_events_are_written_to_the_outbox_with_the_save(state_store: StateStore) -> None:
    run = await state_store.create_plan_run(_run())
    announced = Event(topic="collaboration.completed.run-1", payload={"run_id": "run-1"}, trace_id="trace-1")
    await state_store.save_plan_run(run.model_copy(update={"status": PlanRunStatus.SUCCEEDED}), events=[announced])
    pending = await state_store.pending_events()
    assert [entry.event.event_id for entry in pending] == [announced.event_id]
    with pytest.raises(ConflictError):  # a losing save appends nothing
        await state_store.save_plan_run(run, events=[Event(topic="x.y", payload={}, trace_id="t")])
    assert len(await state_store.pending_events()) == 1


async def test_list_filters_by_agent_and_status_newest_first(state_store: StateStore) -> None:
    await state_store.create_plan_run(_run("old", created_at=T0))
    await state_store.create_plan_run(_run("new", created_at=T0 + timedelta(seconds=1)))
    await state_store.create_plan_run(_run("other", agent="crew", status=PlanRunStatus.RUNNING))
    assert [run.id for run in await state_store.list_plan_runs(agent="team")] == ["new", "old"]
    assert [run.id for run in await state_store.list_plan_runs(status=PlanRunStatus.RUNNING)] == ["other"]
    assert [run.id for run in await state_store.list_plan_runs(limit=1, agent="team")] == ["new"]
