"""Aggregates of executions over time as the state store computes them: a facet of the
store (`ports/state.py`), in its own module as the audit log and agent versions are."""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol

from agentrunner.domain.stats import DayCost, ExecutionStats


class ExecutionAggregates(Protocol):
    """Counts and latencies of executions per time bucket, and their cost per day, read by the
    dashboard's overview: from the database, never cached (a read is one bounded window)."""

    async def execution_stats(
        self,
        *,
        since: datetime,
        bucket_seconds: int,
        buckets: int,
        tenant: str | None = None,
        agent: str | None = None,
    ) -> ExecutionStats:
        """The `buckets` buckets of `bucket_seconds` from `since`, oldest first (empty ones
        included), over executions created in them (of `tenant` and `agent` when given):
        counts by status, and the nearest-rank p50/p95 of created-to-finished seconds of
        those that ended."""
        ...

    async def cost_per_day(
        self, *, first_day: date, days: int, tenant: str | None = None, agent: str | None = None
    ) -> list[DayCost]:
        """The `days` UTC days from `first_day`, oldest first (empty ones included), over the
        executions created on them (of `tenant` and `agent` when given): per agent, per tenant
        and in all, each day's figures those `usage()` answers for that day, read in one
        statement (one snapshot) from the daily usage buckets and the unfinished executions."""
        ...
