"""The retention purger on a real database: a pass works in transactions of `batch_size`
rows, one replica at a time holds the purge, writers keep writing while it runs, and a
node's scheduler role runs it in the background."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.event import new_id
from agentrunner.domain.execution import Execution, ExecutionStatus, utcnow
from agentrunner.ports.retention import PurgeKind
from agentrunner.runtime.retention import RetentionPurger, RetentionWindows
from tests.integration.conftest import node_on

OLD = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
WINDOWS = RetentionWindows(
    executions=timedelta(days=30),
    fires=timedelta(days=30),
    dead_letters=timedelta(days=30),
    webhook_deliveries=timedelta(days=30),
    idempotency_keys=timedelta(days=1),
)


def _ended(created_at: datetime, status: ExecutionStatus = ExecutionStatus.SUCCEEDED) -> Execution:
    return Execution(execution_id=new_id(), agent="writer", status=status, trace_id=new_id(), created_at=created_at)


def _purger(store: SQLStateStore, batch_size: int) -> RetentionPurger:
    return RetentionPurger(retention=store, windows=WINDOWS, batch_size=batch_size)


async def test_a_pass_deletes_in_transactions_of_batch_size(store: SQLStateStore) -> None:
    for i in range(23):
        await store.create_execution(_ended(OLD + timedelta(seconds=i)))

    report = await _purger(store, batch_size=5).purge_once()

    assert report.held
    assert report.batches[PurgeKind.EXECUTIONS] == [5, 5, 5, 5, 3]
    assert report.deleted == {PurgeKind.EXECUTIONS: 23}
    assert (await store.usage()).executions == 23
    assert (await _purger(store, batch_size=5).purge_once()).deleted == {}


@pytest.mark.postgres
async def test_one_replica_at_a_time_holds_the_purge(postgres_url: str) -> None:
    first, second = SQLStateStore(postgres_url), SQLStateStore(postgres_url)
    await first.start()
    await second.start()
    try:
        await first.create_execution(_ended(OLD))
        async with first.purge_lease() as held:
            assert held
            skipped = await _purger(second, batch_size=10).purge_once()
            assert not skipped.held
            assert skipped.batches == {}
        report = await _purger(second, batch_size=10).purge_once()  # freed on exit
        assert report.held
        assert report.deleted == {PurgeKind.EXECUTIONS: 1}
    finally:
        await first.close()
        await second.close()


async def test_writers_keep_writing_while_a_purge_runs(store: SQLStateStore) -> None:
    for i in range(300):
        await store.create_execution(_ended(OLD + timedelta(milliseconds=i)))
    running = [_ended(utcnow(), ExecutionStatus.RUNNING) for _ in range(40)]

    async def write() -> None:
        for execution in running:
            await store.create_execution(execution)
            await store.save_execution(execution.model_copy(update={"status": ExecutionStatus.SUCCEEDED}))

    report, _ = await asyncio.gather(_purger(store, batch_size=20).purge_once(), write())

    assert report.deleted[PurgeKind.EXECUTIONS] == 300
    assert len(report.batches[PurgeKind.EXECUTIONS]) == 16  # 15 full batches and the empty one that ends it
    for execution in running:
        assert (await store.get_execution(execution.execution_id)).status is ExecutionStatus.SUCCEEDED
    assert (await store.usage()).executions == 340


async def test_a_nodes_scheduler_role_purges_in_the_background(tmp_path: Path) -> None:
    echo = "name: echo\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
    async with node_on(
        "memory",
        tmp_path,
        {"echo.yml": echo},
        retention_days=1e-9,
        idempotency_ttl_seconds=1e-4,
        retention_interval_seconds=0.05,
    ) as node:
        finished = await node.orchestrator.invoke("echo", {"prompt": "x"}, wait=30)
        assert finished.status is ExecutionStatus.SUCCEEDED

        deadline = time.monotonic() + 30
        while (await node.store.queries.list_executions()).items:
            assert time.monotonic() < deadline, "no pass purged the execution within 30 s"
            await asyncio.sleep(0.05)

        assert (await node.store.queries.usage()).executions == 1
