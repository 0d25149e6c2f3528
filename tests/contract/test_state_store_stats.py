"""StateStore contract, executions per time bucket (issue 24, the dashboard's overview): counts
by status and nearest-rank p50/p95 latency per bucket, empty buckets included, a tenant's
and an agent's own only when named; on every backend (SQLite, PostgreSQL, either behind a
cache)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.ports.state import StateStore

SINCE = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _execution(
    number: int,
    minute: float,
    status: ExecutionStatus,
    latency: float | None,
    *,
    tenant: str = "acme",
    agent: str = "writer",
) -> Execution:
    created = SINCE + timedelta(minutes=minute)
    return Execution(
        execution_id=f"exec-{number}",
        agent=agent,
        status=status,
        tenant=tenant,
        trace_id=f"trace-{number}",
        created_at=created,
        finished_at=created + timedelta(seconds=latency) if latency is not None else None,
    )


async def _record(store: StateStore, *executions: Execution) -> None:
    for execution in executions:
        await store.create_execution(execution)


async def test_counts_by_status_and_latency_percentiles_per_bucket(state_store: StateStore) -> None:
    ok, failed, running = ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.RUNNING
    # Bucket 0: ten that ended in 1..10 s and one still running; bucket 2: one failure.
    first = [_execution(n, 0.5, ok, float(n)) for n in range(1, 10)]
    await _record(
        state_store,
        *first,
        _execution(10, 0.9, failed, 10.0),
        _execution(11, 0.1, running, None),
        _execution(12, 2.0, failed, 0.25),
        _execution(13, -0.1, ok, 1.0),  # before the window
        _execution(14, 3.0, ok, 1.0),  # after it
    )

    stats = await state_store.execution_stats(since=SINCE, bucket_seconds=60, buckets=3)

    assert stats.until == SINCE + timedelta(minutes=3)
    assert [bucket.start for bucket in stats.buckets] == [SINCE + timedelta(minutes=m) for m in range(3)]
    assert [bucket.counts for bucket in stats.buckets] == [
        {"succeeded": 9, "failed": 1, "running": 1},
        {},
        {"failed": 1},
    ]
    # Nearest rank over the ten that ended: the 5th (5 s) and the 10th (10 s).
    assert (stats.buckets[0].p50_seconds, stats.buckets[0].p95_seconds) == (5.0, 10.0)
    assert (stats.buckets[1].p50_seconds, stats.buckets[1].p95_seconds) == (None, None)
    assert (stats.buckets[2].p50_seconds, stats.buckets[2].p95_seconds) == (0.25, 0.25)


async def test_a_tenant_or_an_agent_named_counts_its_own_only(state_store: StateStore) -> None:
    ok = ExecutionStatus.SUCCEEDED
    await _record(
        state_store,
        _execution(1, 0, ok, 1.0, tenant="acme"),
        _execution(2, 0, ok, 30.0, tenant="globex"),
        _execution(3, 0, ok, 2.0, tenant="acme", agent="reader"),
    )

    acme = await state_store.execution_stats(since=SINCE, bucket_seconds=60, buckets=1, tenant="acme")
    globex = await state_store.execution_stats(since=SINCE, bucket_seconds=60, buckets=1, tenant="globex")
    writer = await state_store.execution_stats(since=SINCE, bucket_seconds=60, buckets=1, agent="writer")
    everyone = await state_store.execution_stats(since=SINCE, bucket_seconds=60, buckets=1)

    assert (acme.buckets[0].counts, acme.buckets[0].p95_seconds) == ({"succeeded": 2}, 2.0)
    assert (globex.buckets[0].counts, globex.buckets[0].p50_seconds) == ({"succeeded": 1}, 30.0)
    assert (writer.buckets[0].counts, writer.buckets[0].p95_seconds) == ({"succeeded": 2}, 30.0)
    assert everyone.buckets[0].counts == {"succeeded": 3}
    assert await state_store.execution_stats(since=SINCE, bucket_seconds=60, buckets=1, tenant="nobody") == (
        await state_store.execution_stats(since=SINCE, bucket_seconds=60, buckets=1, agent="nobody")
    )
