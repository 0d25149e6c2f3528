"""`GET /stats/executions` and `GET /stats/cost`: the figures the dashboard's overview draws,
aggregated by the database, to include in the orchestrator app (the dashboard's origin).

Everything is the caller's own (ARCHITECTURE §10): a tenant's figures count its executions
only, an admin's every tenant's, or one tenant's it names (`?tenant=`); a tenant naming
another is refused. Reads are bounded: a window of at most 7 days cut into at most
`MAX_BUCKETS` buckets, and cost over at most `MAX_COST_DAYS` days. Cost is read from the
store's usage totals (the figures of `GET /usage` for each UTC day), every day in one
statement, per agent and per tenant: a tenant's breakdown by tenant holds itself only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from agentrunner.domain.errors import AdminOnlyError
from agentrunner.domain.execution import utcnow
from agentrunner.domain.stats import MAX_BUCKETS, DayCost, ExecutionStats, bucket_edges
from agentrunner.ports.stats import ExecutionAggregates
from agentrunner.tracing import visible_tenant

# A read is one pass over the executions created in its window: 7 days (the overview's
# longest) keeps it to a week of history (docs/operations.md has its cost at 1M executions).
MAX_WINDOW_SECONDS = 7 * 86400
MAX_COST_DAYS = 31

AgentFilter = Annotated[str | None, Query(min_length=1, max_length=128, description="One agent's executions only.")]
TenantFilter = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        description="Admins: one tenant's figures (default: every tenant's). A tenant may name only itself.",
    ),
]


class CostStats(BaseModel):
    """Cost per UTC day, oldest first, today last; `tenants` are those the caller may name."""

    tenant: str | None
    tenants: list[str]
    days: list[DayCost] = Field(description="Each with its figures per agent and per tenant (a tenant: its own).")


def _tenant_shown(asked: str | None) -> str | None:
    """The tenant whose figures the caller sees: its own; an admin's choice, or all (None)."""
    seen = visible_tenant()
    if seen is None:
        return asked
    if asked in (None, seen):
        return seen
    raise AdminOnlyError("the figures of another tenant need a key of ADMIN_API_KEYS")


def stats_routes(aggregates: ExecutionAggregates, tenants: Sequence[str] = ()) -> APIRouter:
    """The overview's aggregate routes over the store; `tenants` are the configured ones
    (an admin may pick among them)."""
    router = APIRouter(tags=["stats"])

    @router.get("/stats/executions", response_model=ExecutionStats)
    async def execution_stats(
        window: Annotated[int, Query(ge=60, le=MAX_WINDOW_SECONDS, description="Seconds back from now.")] = 3600,
        bucket: Annotated[int, Query(ge=60, le=86400, description="Seconds a bucket spans.")] = 60,
        agent: AgentFilter = None,
        tenant: TenantFilter = None,
    ) -> ExecutionStats:
        """Executions per time bucket by status, and p50/p95 latency (created to finished) of
        those that ended, over the last `window` seconds (at most 1440 buckets)."""
        if math.ceil(window / bucket) > MAX_BUCKETS:
            raise RequestValidationError(
                [
                    {
                        "type": "value_error",
                        "loc": ("query", "window"),
                        "msg": f"window / bucket is over {MAX_BUCKETS} buckets: take a longer bucket",
                    }
                ]
            )
        shown = _tenant_shown(tenant)
        since, _, count = bucket_edges(utcnow(), window, bucket)
        return await aggregates.execution_stats(
            since=since, bucket_seconds=bucket, buckets=count, tenant=shown, agent=agent
        )

    @router.get("/stats/cost", response_model=CostStats)
    async def cost_stats(
        days: Annotated[int, Query(ge=1, le=MAX_COST_DAYS, description="UTC days back, today included.")] = 14,
        agent: AgentFilter = None,
        tenant: TenantFilter = None,
    ) -> CostStats:
        """Tokens and cost per UTC day, by agent and by tenant, read from the usage totals of
        `GET /usage` (a tenant's: its own executions, under its own name only)."""
        shown = _tenant_shown(tenant)
        first_day = utcnow().date() - timedelta(days=days - 1)
        per_day = await aggregates.cost_per_day(first_day=first_day, days=days, tenant=shown, agent=agent)
        seen = visible_tenant()
        return CostStats(tenant=shown, tenants=list(tenants) if seen is None else [seen], days=per_day)

    return router
