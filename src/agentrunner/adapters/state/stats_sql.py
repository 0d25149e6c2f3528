"""Executions per time bucket in SQL (`ports/stats.py`): counts by status and latency
percentiles, computed by the database over one bounded window.

The window ranges over `created_at`, served by the execution indexes of migration 0017
(leading with the tenant, or the agent, when one is named). Percentiles are nearest-rank
(`domain/stats.nearest_rank`). On PostgreSQL one statement reads the window once: a count
per status (`FILTER`) and `percentile_disc`, which is nearest-rank, per bucket. SQLite has
no ordered-set aggregate: a second statement ranks each bucket's latencies with window
functions and keeps the rows at the two ranks.

The cost is one pass over the executions created in the window (measured in
docs/operations.md); a window is at most 7 days (api/stats.py). Cost per day is one
statement over the daily usage buckets and the few unfinished executions (usage_sql.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, Integer, Select, cast, func, literal, or_, select

from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.tables import ExecutionRow
from agentrunner.adapters.state.usage_sql import cost_by_day, daily_usage_query
from agentrunner.domain.execution import ExecutionStatus
from agentrunner.domain.stats import DayCost, ExecutionBucket, ExecutionStats, nearest_rank

# SQLite keeps a datetime as text: julianday() reads it, in days since noon of 4714 BC.
_UNIX_EPOCH_JULIAN_DAY = 2440587.5
_SECONDS_A_DAY = 86400.0
PERCENTILES = (50, 95)
STATUSES = tuple(ExecutionStatus)

Picked = dict[tuple[int, int], float]  # (bucket, percentile) -> seconds


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
        latency = self._seconds(ExecutionRow.finished_at) - self._seconds(ExecutionRow.created_at)
        within = [ExecutionRow.created_at >= since, ExecutionRow.created_at < until]
        if tenant is not None:
            within.append(ExecutionRow.tenant == tenant)
        if agent:
            within.append(ExecutionRow.agent == agent)
        columns: list[Any] = [bucket, *(func.count().filter(ExecutionRow.status == status) for status in STATUSES)]
        if not self.is_sqlite:
            columns += [func.percentile_disc(percent / 100).within_group(latency) for percent in PERCENTILES]
        async with self._session() as session:
            rows = (await session.execute(select(*columns).where(*within).group_by(bucket))).all()
            if self.is_sqlite:
                picked = _picked((await session.execute(_ranked(bucket, latency, within))).all())
            else:  # a row: the bucket, a count per status, then a value per percentile
                picked = {
                    (int(row[0]), p): row[1 + len(STATUSES) + i] for row in rows for i, p in enumerate(PERCENTILES)
                }
        counts = {int(row[0]): {s.value: int(n) for s, n in zip(STATUSES, row[1:], strict=False) if n} for row in rows}
        return ExecutionStats(
            since=since,
            until=until,
            bucket_seconds=bucket_seconds,
            buckets=[
                ExecutionBucket(
                    start=since + timedelta(seconds=index * bucket_seconds),
                    counts=counts.get(index, {}),
                    p50_seconds=_rounded(picked.get((index, 50))),
                    p95_seconds=_rounded(picked.get((index, 95))),
                )
                for index in range(buckets)
            ],
        )

    @idempotent
    async def cost_per_day(
        self, *, first_day: date, days: int, tenant: str | None = None, agent: str | None = None
    ) -> list[DayCost]:
        since = datetime.combine(first_day, time(), UTC)
        query = daily_usage_query(
            since=since, until=since + timedelta(days=days), agent=agent, tenant=tenant, sqlite=self.is_sqlite
        )
        async with self._session() as session:
            rows = list((await session.execute(query)).all())
        return cost_by_day(rows, [first_day + timedelta(days=n) for n in range(days)])

    def _bucket(self, since: datetime, bucket_seconds: int) -> ColumnElement[int]:
        # created_at >= since, so the offset is never negative and truncation is floor.
        offset = self._seconds(ExecutionRow.created_at) - literal(since.timestamp(), Float)
        return cast(offset / bucket_seconds, Integer) if self.is_sqlite else func.floor(offset / bucket_seconds)

    def _seconds(self, column: Any) -> ColumnElement[float]:
        """Seconds since the epoch of a datetime column, on either database."""
        if self.is_sqlite:
            return (func.julianday(column) - _UNIX_EPOCH_JULIAN_DAY) * _SECONDS_A_DAY
        return cast(func.extract("epoch", column), Float)


def _ranked(bucket: ColumnElement[int], latency: ColumnElement[float], within: list[Any]) -> Select[Any]:
    """The rows of each bucket at the ranks of PERCENTILES among its ended executions."""
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


def _picked(rows: Sequence[Any]) -> Picked:
    picked: Picked = {}
    for index, rank, n, latency in rows:
        for percent in PERCENTILES:
            if rank == nearest_rank(int(n), percent):
                picked[int(index), percent] = float(latency)
    return picked


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(float(seconds), 3)
