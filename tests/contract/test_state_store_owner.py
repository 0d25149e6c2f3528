"""StateStore contract, owners (issue 19): every record a caller can reach keeps its tenant,
a session is named within its tenant, and lists given a `tenant` show that tenant's records
only, on every backend (SQLite, PostgreSQL, either behind a cache)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agentrunner.domain.errors import StateNotFoundError
from agentrunner.domain.event import DeadLetter, Event
from agentrunner.domain.execution import Execution
from agentrunner.domain.plan import PlanRun
from agentrunner.domain.schedule import Schedule, ScheduleSource
from agentrunner.domain.state import AgentState
from agentrunner.ports.state import StateStore

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


async def test_two_tenants_sessions_of_one_id_are_two_sessions(state_store: StateStore) -> None:
    await state_store.save_state(
        AgentState(agent="chat", session_id="s1", tenant="team-a", history=[{"role": "user", "content": "a"}]),
        expected_version=0,
    )
    await state_store.save_state(
        AgentState(agent="chat", session_id="s1", tenant="team-b", history=[{"role": "user", "content": "b"}]),
        expected_version=0,
    )

    team_a = await state_store.load_state("chat", "s1", tenant="team-a")
    team_b = await state_store.load_state("chat", "s1", tenant="team-b")

    assert (team_a.tenant, team_a.history[0]["content"], team_a.version) == ("team-a", "a", 1)
    assert (team_b.tenant, team_b.history[0]["content"], team_b.version) == ("team-b", "b", 1)


async def test_a_session_of_another_tenant_is_not_found(state_store: StateStore) -> None:
    await state_store.save_state(AgentState(agent="chat", session_id="s1", tenant="team-a"), expected_version=0)

    with pytest.raises(StateNotFoundError):
        await state_store.load_state("chat", "s1", tenant="team-b")
    with pytest.raises(StateNotFoundError):
        await state_store.load_state("chat", "s1")  # the implicit tenant (auth off) is another one
    with pytest.raises(StateNotFoundError):
        await state_store.delete_state("chat", "s1", tenant="team-b")
    assert (await state_store.load_state("chat", "s1", tenant="team-a")).version == 1


async def test_deleting_one_tenants_session_leaves_the_others(state_store: StateStore) -> None:
    for tenant in ("team-a", "team-b"):
        await state_store.save_state(AgentState(agent="chat", session_id="s1", tenant=tenant), expected_version=0)

    await state_store.delete_state("chat", "s1", tenant="team-a")

    with pytest.raises(StateNotFoundError):
        await state_store.load_state("chat", "s1", tenant="team-a")
    assert (await state_store.load_state("chat", "s1", tenant="team-b")).tenant == "team-b"


async def test_a_versioned_save_is_checked_against_the_tenants_own_session(state_store: StateStore) -> None:
    await state_store.save_state(AgentState(agent="chat", session_id="s1", tenant="team-a"), expected_version=0)
    await state_store.save_state(AgentState(agent="chat", session_id="s1", tenant="team-a"), expected_version=1)

    saved = await state_store.save_state(AgentState(agent="chat", session_id="s1", tenant="team-b"), expected_version=0)

    assert saved.version == 1


async def test_executions_listed_for_a_tenant_are_its_own(state_store: StateStore) -> None:
    for index, tenant in enumerate(("team-a", "team-b", None, "team-a")):
        await state_store.create_execution(
            Execution(
                execution_id=f"exec-{index}",
                agent="writer",
                trace_id="t",
                tenant=tenant,
                created_at=T0 + timedelta(seconds=index),
            )
        )

    mine = await state_store.list_executions(tenant="team-a")
    everyone = await state_store.list_executions()

    assert [e.execution_id for e in mine.items] == ["exec-3", "exec-0"]
    assert len(everyone.items) == 4


async def test_a_dead_letter_keeps_its_tenant_and_lists_filter_by_it(state_store: StateStore) -> None:
    for tenant, event_id in (("team-a", "ev-a"), ("team-b", "ev-b"), (None, "ev-none")):
        event = Event(event_id=event_id, topic="orders.created", trace_id="t")
        await state_store.record_dead_letter(DeadLetter(queue="agent.x", event=event, error="boom"), tenant=tenant)

    mine = await state_store.list_dead_letters(tenant="team-a")

    assert [(letter.event.event_id, letter.tenant) for letter in mine] == [("ev-a", "team-a")]
    assert (await state_store.get_dead_letter(mine[0].id)).tenant == "team-a"
    assert len(await state_store.list_dead_letters()) == 3


async def test_a_schedule_keeps_its_tenant_and_lists_filter_by_it(state_store: StateStore) -> None:
    await state_store.create_schedule(Schedule(id="a", agent="writer", interval_seconds=60, tenant="team-a"))
    await state_store.create_schedule(Schedule(id="b", agent="writer", interval_seconds=60, tenant="team-b"))
    await state_store.sync_config_schedules(
        [Schedule(id="config:writer", agent="writer", interval_seconds=60, source=ScheduleSource.CONFIG)]
    )

    mine = await state_store.list_schedules(tenant="team-a")

    assert [(s.id, s.tenant) for s in mine] == [("a", "team-a")]
    assert (await state_store.get_schedule("b")).tenant == "team-b"
    assert (await state_store.get_schedule("config:writer")).tenant is None
    assert len(await state_store.list_schedules()) == 3


async def test_a_plan_run_keeps_its_tenant_through_saves_and_lists_filter_by_it(state_store: StateStore) -> None:
    created = await state_store.create_plan_run(PlanRun(id="run-a", agent="team", trace_id="t", tenant="team-a"))
    await state_store.create_plan_run(PlanRun(id="run-b", agent="team", trace_id="t", tenant="team-b"))
    await state_store.save_plan_run(created.model_copy(update={"result": "done"}))

    mine = await state_store.list_plan_runs(tenant="team-a")

    assert [(run.id, run.tenant, run.result) for run in mine] == [("run-a", "team-a", "done")]
    assert (await state_store.get_plan_run("run-b")).tenant == "team-b"
    assert len(await state_store.list_plan_runs()) == 2


async def test_an_idempotency_key_is_claimed_for_a_tenant(state_store: StateStore) -> None:
    now = datetime.now(UTC)
    windows = {"expired_before": now - timedelta(hours=1), "abandoned_before": now - timedelta(seconds=30)}

    assert await state_store.claim_idempotency_key("key-a", "fp", tenant="team-a", **windows) is None
    earlier = await state_store.claim_idempotency_key("key-a", "fp", tenant="team-a", **windows)

    assert earlier is not None
    assert earlier.fingerprint == "fp"
