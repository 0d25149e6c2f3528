"""Aggregates of executions over time, for the dashboard's overview: how many ended how,
and how long they took, per time bucket; what they cost per UTC day, by agent and tenant.

A window is cut into buckets aligned on multiples of the bucket's length since the epoch,
so two reads a few seconds apart draw the same bars; the last bucket holds now.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from agentrunner.domain.state import AgentUsage

# The most buckets one read may ask for: a day by the minute.
MAX_BUCKETS = 1440


class ExecutionBucket(BaseModel):
    """Executions created in [start, start + bucket): how many by status, and the p50/p95 of
    the latency (created to finished, seconds) of those that ended; None when none ended."""

    model_config = ConfigDict(frozen=True)

    start: datetime
    counts: dict[str, int] = Field(default_factory=dict)
    p50_seconds: float | None = None
    p95_seconds: float | None = None


class ExecutionStats(BaseModel):
    """Every bucket of a window, oldest first, empty ones included."""

    model_config = ConfigDict(frozen=True)

    since: datetime
    until: datetime
    bucket_seconds: int
    buckets: list[ExecutionBucket]


class TenantUsage(BaseModel):
    """Tokens and cost of one tenant's executions over a time range ("" for executions of
    no tenant: API auth off)."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    executions: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = Field(default=None, description="None when none had a known price.")


class DayCost(BaseModel):
    """Tokens and cost of the executions created on one UTC day, per agent, per tenant and
    in all: the totals of `GET /usage` over that day."""

    model_config = ConfigDict(frozen=True)

    day: date
    agents: list[AgentUsage]
    tenants: list[TenantUsage] = Field(default_factory=list)
    executions: int
    cost_usd: float | None = Field(description="None when no execution of the day had a known price.")


def bucket_edges(now: datetime, window_seconds: int, bucket_seconds: int) -> tuple[datetime, datetime, int]:
    """(since, until, count): `count` whole buckets of `bucket_seconds` covering the last
    `window_seconds` up to `now`, the last one holding `now`."""
    end = (math.floor(now.timestamp() / bucket_seconds) + 1) * bucket_seconds
    count = max(1, math.ceil(window_seconds / bucket_seconds))
    until = datetime.fromtimestamp(end, UTC)
    return until - timedelta(seconds=count * bucket_seconds), until, count


def nearest_rank(count: int, percent: int) -> int:
    """The 1-based rank of the `percent`th percentile among `count` sorted values (the
    nearest-rank method: the smallest value at or above that share of the values)."""
    return max(1, (count * percent + 99) // 100)
