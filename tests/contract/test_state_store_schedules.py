"""StateStore contract, schedules and fires: what every backend (SQLite, PostgreSQL, either
behind a cache) must do the same way. Claims decide which scheduler replica fires a tick,
so the contract includes concurrent claims from separate stores."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentrunner.domain.errors import ConflictError, ScheduleNotFoundError
from agentrunner.domain.event import Event, new_id
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.schedule import (
    Activity,
    FireStatus,
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
    ScheduleFire,
    ScheduleSource,
)
from agentrunner.ports.state import FireClaim, StateStore

T0 = datetime(2026, 3, 1, 9, 0, 0, 250000, tzinfo=UTC)


def _schedule(schedule_id: str = "daily", **fields: Any) -> Schedule:
    values: dict[str, Any] = {"id": schedule_id, "agent": "reporter", "cron": "0 9 * * *", "created_at": T0}
    values["updated_at"] = T0
    values.update(fields)
    return Schedule.model_validate(values)


def _claim(schedule_id: str, fire_time: datetime, *, status: FireStatus = FireStatus.FIRED) -> FireClaim:
    execution_id = new_id() if status is FireStatus.FIRED else None
    fire = ScheduleFire(
        id=new_id(),
        schedule_id=schedule_id,
        agent="reporter",
        fire_time=fire_time,
        fired_at=fire_time + timedelta(milliseconds=3),
        status=status,
        execution_id=execution_id,
    )
    if execution_id is None:
        return FireClaim(fire=fire)
    execution = Execution(
        execution_id=execution_id, agent="reporter", schedule_id=schedule_id, trace_id=new_id(), created_at=fire_time
    )
    event = Event(topic="scheduled.tasks", payload={"execution_id": execution_id}, trace_id=execution.trace_id)
    return FireClaim(fire=fire, execution=execution, events=[event])


async def test_create_then_get_and_list_return_every_field(state_store: StateStore) -> None:
    schedule = _schedule(
        "every-5m",
        cron=None,
        interval_seconds=300,
        timezone="Europe/Paris",
        start_at=T0,
        jitter_seconds=2.5,
        task_data={"checks": ["db", "queue"], "n": 1},
        misfire_policy=MisfirePolicy.SKIP,
        misfire_grace_seconds=30,
        overlap_policy=OverlapPolicy.QUEUE_ONE,
        timeout_seconds=120,
        paused=True,
        source=ScheduleSource.CONFIG,
    )

    created = await state_store.create_schedule(schedule)

    assert created == schedule
    assert await state_store.get_schedule("every-5m") == schedule
    assert await state_store.list_schedules() == [schedule]
    assert await state_store.list_schedules(agent="someone-else") == []


async def test_duplicate_schedule_id_is_refused(state_store: StateStore) -> None:
    await state_store.create_schedule(_schedule())

    with pytest.raises(ConflictError):
        await state_store.create_schedule(_schedule(task_data={"other": True}))
    assert (await state_store.get_schedule("daily")).task_data == {}


async def test_unknown_schedule_raises_not_found_everywhere(state_store: StateStore) -> None:
    with pytest.raises(ScheduleNotFoundError):
        await state_store.get_schedule("nope")
    with pytest.raises(ScheduleNotFoundError):
        await state_store.delete_schedule("nope")
    with pytest.raises(ScheduleNotFoundError):
        await state_store.set_schedule_paused("nope", True)
    with pytest.raises(ScheduleNotFoundError):
        await state_store.list_fires("nope")


async def test_sync_config_schedules_adds_updates_and_deletes_only_config_schedules(state_store: StateStore) -> None:
    config = ScheduleSource.CONFIG
    await state_store.create_schedule(_schedule("ad-hoc"))
    await state_store.sync_config_schedules(
        [_schedule("config:a", source=config), _schedule("config:b", source=config)]
    )
    await state_store.set_schedule_paused("config:a", True)
    paused_at = (await state_store.get_schedule("config:a")).updated_at

    changed = _schedule("config:a", source=config, cron="30 9 * * *", updated_at=T0 + timedelta(days=1))
    await state_store.sync_config_schedules([changed, _schedule("config:c", source=config)])

    schedules = {s.id: s for s in await state_store.list_schedules()}
    assert sorted(schedules) == ["ad-hoc", "config:a", "config:c"]
    assert schedules["config:a"].cron == "30 9 * * *"
    assert schedules["config:a"].paused, "a pause through the API survives a reload"
    assert schedules["config:a"].updated_at == T0 + timedelta(days=1)
    assert paused_at > T0

    await state_store.sync_config_schedules([changed.model_copy(update={"updated_at": T0 + timedelta(days=9)})])
    unchanged = await state_store.get_schedule("config:a")
    assert unchanged.updated_at == T0 + timedelta(days=1), "the same definition again changes nothing"


async def test_pause_and_resume_move_updated_at_and_the_version(state_store: StateStore) -> None:
    await state_store.create_schedule(_schedule())
    before = await state_store.schedules_version()

    paused = await state_store.set_schedule_paused("daily", True)
    again = await state_store.set_schedule_paused("daily", True)
    resumed = await state_store.set_schedule_paused("daily", False)

    assert paused.paused
    assert again.updated_at == paused.updated_at
    assert not resumed.paused
    assert resumed.updated_at >= paused.updated_at > T0
    assert await state_store.schedules_version() != before


async def test_version_changes_with_schedules_but_not_with_fires(state_store: StateStore) -> None:
    first = await state_store.schedules_version()
    await state_store.create_schedule(_schedule())
    created = await state_store.schedules_version()
    await state_store.claim_fires([_claim("daily", T0)])
    fired = await state_store.schedules_version()
    await state_store.delete_schedule("daily")

    assert first != created
    assert fired == created
    assert await state_store.schedules_version() != created


async def test_each_tick_is_claimed_once_across_concurrent_stores(
    state_store_factory: Callable[[], StateStore],
) -> None:
    stores = [state_store_factory() for _ in range(3)]
    for store in stores:
        await store.start()
    ids = [f"s{i}" for i in range(20)]
    for schedule_id in ids:
        await stores[0].create_schedule(_schedule(schedule_id))
    ticks = [T0 + timedelta(seconds=n) for n in range(5)]

    results = await asyncio.gather(
        *(store.claim_fires([_claim(sid, tick) for sid in ids for tick in ticks]) for store in stores)
    )

    won = [(fire.schedule_id, fire.fire_time) for fires in results for fire in fires]
    assert sorted(won) == sorted((sid, tick) for sid in ids for tick in ticks)
    for schedule_id in ids:
        fires = await stores[0].list_fires(schedule_id, limit=100)
        assert [fire.fire_time for fire in fires] == ticks[::-1]
        assert all(fire.outcome is ExecutionStatus.QUEUED for fire in fires)
    executions = await stores[0].list_executions(limit=500)
    assert len(executions.items) == len(ids) * len(ticks)
    assert len(await stores[0].pending_events(limit=500)) == len(ids) * len(ticks)


async def test_a_lost_claim_writes_nothing(state_store: StateStore) -> None:
    await state_store.create_schedule(_schedule())
    first, second = _claim("daily", T0), _claim("daily", T0)

    assert await state_store.claim_fires([first]) == [first.fire]
    assert await state_store.claim_fires([second]) == []

    assert second.execution is not None
    assert [e.execution_id for e in (await state_store.list_executions()).items] == [first.fire.execution_id]
    assert len(await state_store.pending_events()) == 1


async def test_claims_of_a_deleted_schedule_are_dropped_and_the_others_won(state_store: StateStore) -> None:
    await state_store.create_schedule(_schedule("alive"))
    claims = [_claim("alive", T0), _claim("deleted", T0)]

    won = await state_store.claim_fires(claims)

    assert [fire.schedule_id for fire in won] == ["alive"]


async def test_last_fire_at_is_the_latest_claimed_tick(state_store: StateStore) -> None:
    await state_store.create_schedule(_schedule())
    assert (await state_store.get_schedule("daily")).last_fire_at is None

    await state_store.claim_fires([_claim("daily", T0 + timedelta(days=1)), _claim("daily", T0)])
    await state_store.claim_fires([_claim("daily", T0 + timedelta(days=2), status=FireStatus.SKIPPED)])

    assert (await state_store.get_schedule("daily")).last_fire_at == T0 + timedelta(days=2)
    assert (await state_store.list_schedules())[0].last_fire_at == T0 + timedelta(days=2)


async def test_activity_reports_unfinished_runs_and_held_ticks(state_store: StateStore) -> None:
    for schedule_id in ("busy", "held", "idle", "done"):
        await state_store.create_schedule(_schedule(schedule_id))
    busy, done = _claim("busy", T0), _claim("done", T0)
    await state_store.claim_fires([busy, done, _claim("held", T0, status=FireStatus.PENDING)])
    assert done.execution is not None
    await state_store.save_execution(done.execution.model_copy(update={"status": ExecutionStatus.FAILED}))

    activity = await state_store.schedule_activity(["busy", "held", "idle", "done"])

    assert activity == {"busy": Activity(running=True), "held": Activity(pending=True)}


async def test_a_held_fire_is_released_once(state_store: StateStore) -> None:
    await state_store.create_schedule(_schedule())
    held = _claim("daily", T0, status=FireStatus.PENDING)
    await state_store.claim_fires([held])
    run = _claim("daily", T0)
    assert run.execution is not None

    assert await state_store.release_fire(held.fire.id, run.execution, run.events)
    assert not await state_store.release_fire(held.fire.id, run.execution, run.events)

    [fire] = await state_store.list_fires("daily")
    assert fire.status is FireStatus.FIRED
    assert fire.execution_id == run.execution.execution_id
    assert fire.outcome is ExecutionStatus.QUEUED


async def test_unfinished_fires_are_held_ones_and_those_whose_run_goes_on(state_store: StateStore) -> None:
    await state_store.create_schedule(_schedule(timeout_seconds=42))
    queued, finished = _claim("daily", T0), _claim("daily", T0 + timedelta(days=1))
    held = _claim("daily", T0 + timedelta(days=2), status=FireStatus.PENDING)
    skipped = _claim("daily", T0 + timedelta(days=3), status=FireStatus.SKIPPED)
    await state_store.claim_fires([queued, finished, held, skipped])
    assert finished.execution is not None
    await state_store.save_execution(finished.execution.model_copy(update={"status": ExecutionStatus.SUCCEEDED}))

    unfinished = await state_store.unfinished_fires()

    assert sorted((u.fire.id, u.fire.outcome, u.timeout_seconds) for u in unfinished) == sorted(
        [(queued.fire.id, ExecutionStatus.QUEUED, 42), (held.fire.id, None, 42)]
    )
    [running] = [u for u in unfinished if u.fire.execution_id is not None]
    assert running.fire.execution_id == queued.fire.execution_id
    assert running.fire.fire_time == T0


async def test_fires_list_newest_first_with_the_outcome_of_their_run(state_store: StateStore) -> None:
    await state_store.create_schedule(_schedule())
    claims = [_claim("daily", T0 + timedelta(days=n)) for n in range(4)]
    await state_store.claim_fires(claims)
    execution = claims[1].execution
    assert execution is not None
    done = execution.model_copy(
        update={
            "status": ExecutionStatus.SUCCEEDED,
            "output": "report ready",
            "started_at": T0 + timedelta(days=1, seconds=1),
            "finished_at": T0 + timedelta(days=1, seconds=9),
        }
    )
    await state_store.save_execution(done)

    fires = await state_store.list_fires("daily", limit=2, before=T0 + timedelta(days=3))

    assert [fire.fire_time for fire in fires] == [T0 + timedelta(days=2), T0 + timedelta(days=1)]
    assert fires[1].outcome is ExecutionStatus.SUCCEEDED
    assert fires[1].result == "report ready"
    assert fires[1].started_at == done.started_at
    assert fires[1].finished_at == done.finished_at
    assert fires[1].fired_at == claims[1].fire.fired_at


async def test_deleting_a_schedule_forgets_its_fires_but_keeps_executions(state_store: StateStore) -> None:
    await state_store.create_schedule(_schedule())
    await state_store.claim_fires([_claim("daily", T0)])

    await state_store.delete_schedule("daily")

    assert await state_store.list_schedules() == []
    assert len((await state_store.list_executions()).items) == 1
    await state_store.create_schedule(_schedule())
    assert await state_store.list_fires("daily") == []
