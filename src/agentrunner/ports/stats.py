"""Aggregates of executions over time as the state store computes them: a facet of the
store (`ports/state.py`), in its own module as the audit log and agent versions are."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from agentrunner.domain.stats import ExecutionStats


class ExecutionAggregates(Protocol):
    """Counts and latencies of executions per time bucket, read by the dashboard's overview:
    from the database, never cached (a read is one bounded window)."""

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
