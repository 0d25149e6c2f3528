"""Executions per time bucket in SQL (`ports/stats.py`): counts by status and latency
percentiles, computed by the database over one bounded window.

Both statements range over `created_at` within the window, served by the execution indexes
of migration 0017 (leading with the tenant, or the agent, when one is named). Percentiles
are nearest-rank, picked with window functions (`row_number` within a bucket), which
SQLite and PostgreSQL both have: one statement for both, no rows shipped to Python.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, Integer, cast, func, literal, or_, select

from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.tables import ExecutionRow
from agentrunner.domain.stats import ExecutionBucket, ExecutionStats, nearest_rank

# SQLite keeps a datetime as text: julianday() reads it, in days since noon of 4714 BC.
_UNIX_EPOCH_JULIAN_DAY = 2440587.5
_SECONDS_A_DAY = 86400.0
PERCENTILES = (50, 95)


class StatsSQL(SQLEngine):
    """`ExecutionAggregates` over the shared engine."""

    @idempotent
    async def execution_stats(
        self,
        *,
        since: datetime,
        bucket_seconds: int,
        buckets: int,
        tenant: str | None = None,
        agent: str | None = None,
    ) -> ExecutionStats:
        until = since + timedelta(seconds=bucket_seconds * buckets)
        bucket = self._bucket(since, bucket_seconds)
        within = [ExecutionRow.created_at >= since, ExecutionRow.created_at < until]
        if tenant is not None:
            within.append(ExecutionRow.tenant == tenant)
        if agent:
            within.append(ExecutionRow.agent == agent)
        counted = (
            select(bucket.label("bucket"), ExecutionRow.status, func.count())
            .where(*within)
            .group_by(bucket, ExecutionRow.status)
        )
        async with self._session() as session:
            counts = (await session.execute(counted)).all()
            latencies = (await session.execute(self._percentiles(bucket, within))).all()
        return _stats(since, until, bucket_seconds, buckets, counts, latencies)

    def _bucket(self, since: datetime, bucket_seconds: int) -> ColumnElement[int]:
        # created_at >= since, so the offset is never negative and truncation is floor.
        offset = self._seconds(ExecutionRow.created_at) - literal(since.timestamp(), Float)
        return cast(offset / bucket_seconds, Integer) if self.is_sqlite else func.floor(offset / bucket_seconds)

    def _seconds(self, column: Any) -> ColumnElement[float]:
        """Seconds since the epoch of a datetime column, on either database."""
        if self.is_sqlite:
            return (func.julianday(column) - _UNIX_EPOCH_JULIAN_DAY) * _SECONDS_A_DAY
        return cast(func.extract("epoch", column), Float)

    def _percentiles(self, bucket: ColumnElement[int], within: list[ColumnElement[bool]]) -> Any:
        latency = self._seconds(ExecutionRow.finished_at) - self._seconds(ExecutionRow.created_at)
        ranked = (
            select(
                bucket.label("bucket"),
                latency.label("latency"),
                func.row_number().over(partition_by=bucket, order_by=latency).label("rank"),
                func.count().over(partition_by=bucket).label("n"),
            )
            .where(*within, ExecutionRow.finished_at.is_not(None))
            .subquery()
        )
        # nearest_rank() in integer arithmetic (`//`), which both databases share.
        ranks = [ranked.c.rank == (ranked.c.n * percent + 99) // 100 for percent in PERCENTILES]
        return select(ranked.c.bucket, ranked.c.rank, ranked.c.n, ranked.c.latency).where(or_(*ranks))


def _stats(
    since: datetime, until: datetime, bucket_seconds: int, count: int, counts: Sequence[Any], latencies: Sequence[Any]
) -> ExecutionStats:
    by_bucket: dict[int, dict[str, int]] = defaultdict(dict)
    for index, status, number in counts:
        by_bucket[int(index)][status] = int(number)
    picked: dict[tuple[int, int], float] = {}  # (bucket, percentile) -> seconds
    for index, rank, n, latency in latencies:
        for percent in PERCENTILES:
            if rank == nearest_rank(int(n), percent):
                picked[int(index), percent] = round(float(latency), 3)
    return ExecutionStats(
        since=since,
        until=until,
        bucket_seconds=bucket_seconds,
        buckets=[
            ExecutionBucket(
                start=since + timedelta(seconds=index * bucket_seconds),
                counts=by_bucket.get(index, {}),
                p50_seconds=picked.get((index, 50)),
                p95_seconds=picked.get((index, 95)),
            )
            for index in range(count)
        ],
    )
