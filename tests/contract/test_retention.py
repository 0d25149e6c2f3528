"""Retention contract: what the purge of every database (SQLite, PostgreSQL) deletes, what it
keeps, in what batches, and that usage totals come out the same after it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.errors import ExecutionNotFoundError, PlanRunNotFoundError
from agentrunner.domain.event import DeadLetter, Event, new_id
from agentrunner.domain.execution import Execution, ExecutionStatus, Usage, utcnow
from agentrunner.domain.plan import Clarification, ClarificationKind, PlanRun, PlanRunStatus, StepRun, StepStatus
from agentrunner.domain.schedule import FireStatus, Schedule, ScheduleFire
from agentrunner.domain.webhook import WebhookDelivery
from agentrunner.ports.retention import PurgeKind
from agentrunner.ports.state import FireClaim

Stores = Callable[[], Awaitable[SQLStateStore]]

# Old enough to go, in the middle of a month and of an hour (the rollup keeps hours).
OLD = datetime(2026, 3, 14, 9, 20, 0, tzinfo=UTC)
CUTOFF = datetime(2026, 4, 1, tzinfo=UTC)
RECENT = datetime(2026, 4, 2, 8, 0, tzinfo=UTC)
TERMINAL = [s for s in ExecutionStatus if s.is_terminal]
UNFINISHED = [s for s in ExecutionStatus if not s.is_terminal]


def _execution(
    created_at: datetime,
    status: ExecutionStatus = ExecutionStatus.SUCCEEDED,
    *,
    agent: str = "writer",
    tenant: str | None = None,
    tokens: tuple[int, int] = (0, 0),
    cost: float | None = None,
) -> Execution:
    return Execution(
        execution_id=new_id(),
        agent=agent,
        status=status,
        tenant=tenant,
        usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]),
        cost_usd=cost,
        trace_id=new_id(),
        created_at=created_at,
    )


async def _count(store: SQLStateStore, table: str) -> int:
    engine = create_async_engine(store._url)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(select(func.count()).select_from(text(table)))).scalar_one())
    finally:
        await engine.dispose()


async def _purge_all(store: SQLStateStore, kind: PurgeKind, before: datetime, limit: int = 100) -> list[int]:
    counts = [await store.purge(kind, before=before, limit=limit)]
    while counts[-1] == limit:
        counts.append(await store.purge(kind, before=before, limit=limit))
    return counts


async def test_only_terminal_executions_older_than_the_window_go(retention_stores: Stores) -> None:
    store = await retention_stores()
    old_ended = [_execution(OLD + timedelta(minutes=i), status) for i, status in enumerate(TERMINAL)]
    old_unfinished = [_execution(OLD, status) for status in UNFINISHED]
    recent = [_execution(RECENT, status) for status in TERMINAL]
    for execution in old_ended + old_unfinished + recent:
        await store.create_execution(execution)

    assert await store.purge(PurgeKind.EXECUTIONS, before=CUTOFF, limit=100) == len(old_ended)

    for gone in old_ended:
        with pytest.raises(ExecutionNotFoundError):
            await store.get_execution(gone.execution_id)
    for kept in old_unfinished + recent:
        assert (await store.get_execution(kept.execution_id)).status is kept.status
    assert await store.purge(PurgeKind.EXECUTIONS, before=CUTOFF, limit=100) == 0


async def test_a_purge_takes_at_most_limit_rows_per_transaction(retention_stores: Stores) -> None:
    store = await retention_stores()
    for i in range(25):
        await store.create_execution(_execution(OLD + timedelta(seconds=i), tokens=(1, 1)))

    assert await _purge_all(store, PurgeKind.EXECUTIONS, CUTOFF, limit=10) == [10, 10, 5]
    assert await _count(store, "executions") == 0
    assert (await store.usage()).executions == 25


async def test_usage_totals_are_the_same_after_a_purge_for_every_tenant_agent_and_period(
    retention_stores: Stores,
) -> None:
    store = await retention_stores()
    # Costs that binary floating point holds exactly: the sums do not depend on their order.
    for i, (agent, tenant, cost) in enumerate(
        [("writer", "acme", 0.25), ("writer", "acme", None), ("writer", "globex", 0.5), ("reader", None, 0.125)] * 3
    ):
        await store.create_execution(
            _execution(OLD + timedelta(minutes=7 * i), agent=agent, tenant=tenant, tokens=(10 + i, i), cost=cost)
        )
        await store.create_execution(_execution(RECENT, agent=agent, tenant=tenant, tokens=(1, 2), cost=cost))
    await store.create_execution(_execution(OLD, ExecutionStatus.RUNNING, agent="reader", tokens=(5, 5)))
    queries: list[dict[str, Any]] = [
        {},
        {"tenant": "acme"},
        {"tenant": "globex"},
        {"agent": "reader"},
        {"agent": "writer", "tenant": "acme"},
        {"since": datetime(2026, 3, 1, tzinfo=UTC), "until": CUTOFF},  # a month, as the budgets ask
        {"since": datetime(2026, 3, 14, tzinfo=UTC), "until": datetime(2026, 3, 15, tzinfo=UTC)},  # a day
        {"since": CUTOFF},
    ]
    before = [await store.usage(**query) for query in queries]

    assert sum(await _purge_all(store, PurgeKind.EXECUTIONS, CUTOFF, limit=5)) == 12

    assert [await store.usage(**query) for query in queries] == before
    assert (before[1].executions, before[1].cost_usd) == (12, 1.5)  # acme: 6 old (3 costed) + 6 recent
    # A second purge adds to the same hours' rollup rows, and still counts each once.
    await store.create_execution(_execution(OLD, agent="writer", tenant="acme", tokens=(3, 4), cost=0.25))
    await store.purge(PurgeKind.EXECUTIONS, before=CUTOFF, limit=100)
    acme = await store.usage(tenant="acme")
    assert (acme.executions, acme.input_tokens, acme.cost_usd) == (13, before[1].input_tokens + 3, 1.75)


async def test_ended_plan_runs_go_with_their_steps_and_clarifications(retention_stores: Stores) -> None:
    store = await retention_stores()

    async def run(status: PlanRunStatus, created_at: datetime) -> PlanRun:
        run_id = new_id()
        created = await store.create_plan_run(
            PlanRun(id=run_id, agent="team", task={}, trace_id="t", created_at=created_at, updated_at=created_at)
        )
        step = StepRun(step_id="write", agent="writer", status=StepStatus.SUCCEEDED)
        asked = Clarification(
            id=new_id(), run_id=run_id, step_id="write", question="?", kind=ClarificationKind.TEXT, asked_at=created_at
        )
        update = {"status": status, "steps": [step], "clarifications": [asked]}
        return await store.save_plan_run(created.model_copy(update=update))

    ended = await run(PlanRunStatus.SUCCEEDED, OLD)
    waiting = await run(PlanRunStatus.NEEDS_CLARIFICATION, OLD)
    recent = await run(PlanRunStatus.FAILED, RECENT)

    assert await store.purge(PurgeKind.PLAN_RUNS, before=CUTOFF, limit=100) == 1

    with pytest.raises(PlanRunNotFoundError):
        await store.get_plan_run(ended.id)
    assert [len((await store.get_plan_run(r.id)).steps) for r in (waiting, recent)] == [1, 1]
    assert await _count(store, "plan_steps") == 2
    assert await _count(store, "clarifications") == 2


async def test_fired_and_skipped_ticks_go_held_ones_stay(retention_stores: Stores) -> None:
    store = await retention_stores()
    await store.create_schedule(
        Schedule.model_validate({"id": "daily", "agent": "reporter", "cron": "0 9 * * *", "created_at": OLD})
    )

    def tick(hours: int, status: FireStatus, fired_at: datetime = OLD) -> FireClaim:
        fire = ScheduleFire(
            id=new_id(),
            schedule_id="daily",
            agent="reporter",
            fire_time=OLD + timedelta(hours=hours),
            fired_at=fired_at,
            status=status,
        )
        return FireClaim(fire=fire)

    claims = [tick(1, FireStatus.FIRED), tick(2, FireStatus.SKIPPED), tick(3, FireStatus.PENDING)]
    await store.claim_fires([*claims, tick(4, FireStatus.FIRED, fired_at=RECENT)])

    assert await store.purge(PurgeKind.FIRES, before=CUTOFF, limit=100) == 2

    left = await store.list_fires("daily", limit=10)
    assert sorted(f.status for f in left) == [FireStatus.FIRED, FireStatus.PENDING]


async def test_settled_webhook_deliveries_go_those_still_retrying_stay(retention_stores: Stores) -> None:
    store = await retention_stores()
    url = "https://hooks.example/x"
    settled = {"delivered": {"delivered_at": OLD}, "gave-up": {"gave_up_at": OLD}}
    for execution_id, fields in settled.items():
        await store.add_webhook_delivery(WebhookDelivery(execution_id=execution_id, url=url, created_at=OLD, **fields))
    await store.add_webhook_delivery(
        WebhookDelivery(execution_id="retrying", url=url, created_at=OLD, next_attempt_at=OLD)
    )
    await store.add_webhook_delivery(
        WebhookDelivery(execution_id="recent", url=url, created_at=RECENT, delivered_at=RECENT)
    )

    assert await store.purge(PurgeKind.WEBHOOK_DELIVERIES, before=CUTOFF, limit=100) == 2

    assert await store.get_webhook_delivery("delivered") is None
    assert await store.get_webhook_delivery("gave-up") is None
    assert await store.get_webhook_delivery("retrying") is not None
    assert await store.get_webhook_delivery("recent") is not None


async def test_dead_letters_idempotency_keys_and_published_events_go_once_past_the_window(
    retention_stores: Stores,
) -> None:
    store = await retention_stores()
    letter = await store.record_dead_letter(
        DeadLetter(queue="q", event=Event(topic="t", payload={}, trace_id="x"), error="boom")
    )
    await store.claim_idempotency_key(
        "k" * 64, "f" * 64, expired_before=utcnow() - timedelta(days=1), abandoned_before=utcnow()
    )
    published, pending = Event(topic="a", payload={}, trace_id="x"), Event(topic="b", payload={}, trace_id="x")
    await store.create_execution(_execution(RECENT), events=[published, pending])
    await store.mark_published([published.event_id])
    past, future = utcnow() - timedelta(minutes=5), utcnow() + timedelta(minutes=5)

    for kind in (PurgeKind.DEAD_LETTERS, PurgeKind.IDEMPOTENCY_KEYS, PurgeKind.OUTBOX):
        assert await store.purge(kind, before=past, limit=100) == 0  # still inside the window
    assert await store.purge(PurgeKind.DEAD_LETTERS, before=future, limit=100) == 1
    assert await store.purge(PurgeKind.IDEMPOTENCY_KEYS, before=future, limit=100) == 1
    assert await store.purge(PurgeKind.OUTBOX, before=future, limit=100) == 1

    assert await store.list_dead_letters(include_replayed=True) == []
    assert letter.id not in {d.id for d in await store.list_dead_letters(include_replayed=True)}
    assert await _count(store, "idempotency_keys") == 0
    assert [e.event.event_id for e in await store.pending_events()] == [pending.event_id]  # unpublished: kept


async def test_two_purgers_at_once_delete_every_row_once(retention_stores: Stores) -> None:
    first, second = await retention_stores(), await retention_stores()
    for i in range(60):
        tenant = "acme" if i % 2 else None
        await first.create_execution(_execution(OLD + timedelta(seconds=i), tenant=tenant, tokens=(i, 1), cost=0.25))
    before = (await first.usage(), await first.usage(tenant="acme"))

    counts = await asyncio.gather(*(_purge_all(s, PurgeKind.EXECUTIONS, CUTOFF, limit=7) for s in (first, second)))

    assert sum(map(sum, counts)) == 60
    assert await _count(first, "executions") == 0
    assert (await second.usage(), await second.usage(tenant="acme")) == before
