"""The execution list and `/usage` are served by indexes on PostgreSQL (migrations 0017
and 0020): every filter of `GET /executions` has an index that yields its page in order
(no sort, no scan of other rows), and `/usage` reads its buckets and only index ranges of
the executions. Checked on the plans of the statements the store runs, with the planner
told to avoid sequential scans, bitmap scans and sorts, so the plan shows which index can
do it alone (a table this small would otherwise be scanned). The figures over a million
rows are bench/scale.py's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from agentrunner.adapters.state.executions_sql import list_query
from agentrunner.adapters.state.executions_statements import EXECUTIONS
from agentrunner.adapters.state.rows import encode_cursor, execution_values
from agentrunner.adapters.state.usage_sql import usage_query
from agentrunner.domain.execution import Execution, ExecutionStatus, Usage, utcnow

pytestmark = pytest.mark.postgres


class Explain(Executable, ClauseElement):
    """EXPLAIN (FORMAT JSON) of a statement, with its parameters bound as the store binds them."""

    inherit_cache = False

    def __init__(self, statement: Any) -> None:
        self.statement = statement


@compiles(Explain, "postgresql")
def _explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.statement, **kw)


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(postgres_url)
    now = utcnow()
    rows = [
        execution_values(
            Execution(
                execution_id=f"e{i:04d}",
                agent=f"agent-{i % 4}",
                status=list(ExecutionStatus)[i % len(ExecutionStatus)],
                tenant=f"tenant-{i % 3}",
                usage=Usage(input_tokens=i, output_tokens=2 * i),
                cost_usd=0.001 * i,
                trace_id=f"t{i}",
                created_at=now - timedelta(hours=i),
            )
        )
        for i in range(300)
    ]
    async with engine.begin() as connection:
        await connection.execute(insert(EXECUTIONS), rows)
    async with engine.connect() as connection:
        await (await connection.execution_options(isolation_level="AUTOCOMMIT")).exec_driver_sql(
            "VACUUM ANALYZE executions"
        )
    yield engine
    await engine.dispose()


async def plan_of(engine: AsyncEngine, statement: Any) -> dict[str, Any]:
    async with engine.begin() as connection:
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort", "enable_incremental_sort"):
            await connection.exec_driver_sql(f"SET LOCAL {setting} = off")
        answer = (await connection.execute(Explain(statement))).scalar_one()
    plan: dict[str, Any] = (json.loads(answer) if isinstance(answer, str) else answer)[0]["Plan"]
    return plan


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in nodes(child))]


def scans(plan: dict[str, Any]) -> set[tuple[str, str]]:
    """(node type, index name) of every index scan of the plan."""
    return {(node["Node Type"], node["Index Name"]) for node in nodes(plan) if "Index Name" in node}


def sorts(plan: dict[str, Any]) -> list[str]:
    return [node["Node Type"] for node in nodes(plan) if "Sort" in node["Node Type"]]


CURSOR = encode_cursor(Execution(execution_id="e0100", agent="agent-0", trace_id="t", created_at=utcnow()))


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({}, "ix_executions_created"),
        ({"agent": "agent-1"}, "ix_executions_agent_created"),
        ({"status": ExecutionStatus.FAILED}, "ix_executions_status_created"),
        ({"tenant": "tenant-1"}, "ix_executions_tenant_created"),
        ({"tenant": "tenant-1", "agent": "agent-1"}, "ix_executions_tenant_agent_created"),
        ({"tenant": "tenant-1", "status": ExecutionStatus.RUNNING}, "ix_executions_tenant_status_created"),
        ({"tenant": "tenant-1", "cursor": CURSOR}, "ix_executions_tenant_created"),
        ({"status": ExecutionStatus.QUEUED, "cursor": CURSOR}, "ix_executions_status_created"),
    ],
    ids=["all", "agent", "status", "tenant", "tenant+agent", "tenant+status", "tenant+cursor", "status+cursor"],
)
async def test_each_filter_of_the_execution_list_reads_its_page_in_order_from_an_index(
    engine: AsyncEngine, filters: dict[str, Any], index: str
) -> None:
    query = list_query(
        agent=filters.get("agent"),
        status=filters.get("status"),
        cursor=filters.get("cursor"),
        tenant=filters.get("tenant"),
    ).limit(51)
    plan = await plan_of(engine, query)
    assert {name for _, name in scans(plan)} == {index}, plan
    assert sorts(plan) == [], plan


@pytest.mark.parametrize("tenant", ["tenant-1", None], ids=["tenant", "all tenants"])
@pytest.mark.parametrize("agent", ["agent-1", None], ids=["agent", "all agents"])
async def test_usage_over_a_month_reads_the_buckets_and_of_the_executions_only_index_ranges(
    engine: AsyncEngine, tenant: str | None, agent: str | None
) -> None:
    now = utcnow()
    query = usage_query(agent=agent, since=now - timedelta(days=30), until=now, tenant=tenant)
    plan = await plan_of(engine, query)
    tables = {name.split("_", 2)[1] for _, name in scans(plan)}
    assert {"usage", "executions"} <= tables, plan  # ix_usage_<bucket>_..., ix_executions_...
    # The executions read are the unfinished (a status index) and the partial hours: each
    # an index range with a condition, never the month's rows.
    for node in nodes(plan):
        if node.get("Relation Name") == "executions":
            assert node["Node Type"] in {"Index Scan", "Index Only Scan"}, plan
            assert "created_at" in node["Index Cond"] or "status" in node["Index Cond"], plan
