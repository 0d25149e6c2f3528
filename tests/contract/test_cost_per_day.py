"""StateStore contract, cost per UTC day by agent and tenant (issue 24, the dashboard's
overview): `cost_per_day()`, one grouped statement over a window of days, answers each day
exactly what `usage()` answers for that day, per agent and per tenant, on every backend;
a tenant or an agent named counts its own only."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta

from agentrunner.domain.execution import Execution, ExecutionStatus, Usage
from agentrunner.domain.stats import TenantUsage
from agentrunner.ports.state import StateStore
from tests.contract.test_usage import TERMINAL_STATUSES, UNFINISHED, _execution

FIRST_DAY = date(2026, 3, 8)
DAYS = 5
TENANTS = ["acme", "globex", None]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


async def _history(store: StateStore) -> list[Execution]:
    """Executions of every status, agent and tenant over the window and a day either side,
    some ended as a worker ends them (queued, running, then ended with its usage)."""
    rng = random.Random(24)
    start = _midnight(FIRST_DAY) - timedelta(days=1)
    executions = []
    for _ in range(90):
        created_at = start + timedelta(
            minutes=rng.randrange(0, (DAYS + 2) * 24 * 60), microseconds=rng.randrange(10**6)
        )
        execution = _execution(
            created_at,
            rng.choice(list(ExecutionStatus)),
            agent=rng.choice(["writer", "reader", "critic"]),
            tenant=rng.choice(TENANTS),
            tokens=(rng.randrange(100), rng.randrange(100)),
            cost=rng.choice([0.25, 0.125, 0.5, None]),  # exact in binary: sums do not depend on order
        )
        executions.append(execution)
        await store.create_execution(execution)
    # Right at the window's midnights, on either side.
    for offset in (timedelta(0), timedelta(microseconds=-1), timedelta(days=DAYS), timedelta(days=1, microseconds=-1)):
        execution = _execution(_midnight(FIRST_DAY) + offset, tenant="globex", tokens=(1, 2), cost=0.125)
        executions.append(execution)
        await store.create_execution(execution)
    for i in range(10):
        queued = _execution(
            start + timedelta(hours=13 * i, minutes=i), ExecutionStatus.QUEUED, tokens=(0, 0), cost=None
        )
        await store.create_execution(queued)
        running = queued.model_copy(update={"status": ExecutionStatus.RUNNING})
        await store.save_execution(running, only_if=frozenset({ExecutionStatus.QUEUED}))
        ended = running.model_copy(
            update={
                "status": TERMINAL_STATUSES[i % 4],
                "usage": Usage(input_tokens=i, output_tokens=1),
                "cost_usd": 0.5,
            }
        )
        await store.save_execution(ended, only_if=UNFINISHED)
        executions.append(ended)
    return executions


async def test_each_day_is_what_usage_answers_for_it_per_agent_and_per_tenant(state_store: StateStore) -> None:
    executions = await _history(state_store)

    scopes: list[tuple[str | None, str | None]] = [(None, None), (None, "acme"), ("writer", None), ("reader", "globex")]
    for agent, tenant in scopes:
        days = await state_store.cost_per_day(first_day=FIRST_DAY, days=DAYS, agent=agent, tenant=tenant)

        assert [figures.day for figures in days] == [FIRST_DAY + timedelta(days=n) for n in range(DAYS)]
        for figures in days:
            since = _midnight(figures.day)
            until = since + timedelta(days=1)
            usage = await state_store.usage(since=since, until=until, agent=agent, tenant=tenant)
            assert figures.agents == usage.agents, (agent, tenant, figures.day)
            assert (figures.executions, figures.cost_usd) == (usage.executions, usage.cost_usd)
            expected = [] if tenant else _anonymous(executions, since, agent)  # no tenant: usage() cannot name it
            for name in ("acme", "globex"):
                if tenant in (None, name):
                    of_tenant = await state_store.usage(since=since, until=until, agent=agent, tenant=name)
                    if of_tenant.executions:
                        expected.append(TenantUsage(tenant=name, **of_tenant.model_dump(include=_FIGURES)))
            assert figures.tenants == expected, (agent, tenant, figures.day)
        assert sum(figures.executions for figures in days) > 0


_FIGURES = {"executions", "input_tokens", "output_tokens", "cost_usd"}


def _anonymous(executions: list[Execution], day: datetime, agent: str | None) -> list[TenantUsage]:
    """The figures of the executions of no tenant created that day, under "" (first)."""
    mine = [
        e
        for e in executions
        if e.tenant is None and day <= e.created_at < day + timedelta(days=1) and agent in (None, e.agent)
    ]
    if not mine:
        return []
    costs = [e.cost_usd for e in mine if e.cost_usd is not None]
    return [
        TenantUsage(
            tenant="",
            executions=len(mine),
            input_tokens=sum(e.usage.input_tokens for e in mine),
            output_tokens=sum(e.usage.output_tokens for e in mine),
            cost_usd=round(sum(costs), 8) if costs else None,
        )
    ]


async def test_empty_days_are_kept_and_a_named_tenant_or_agent_counts_its_own_only(state_store: StateStore) -> None:
    noon = _midnight(FIRST_DAY) + timedelta(hours=12)
    for execution in [
        _execution(noon, tenant="acme", tokens=(1, 1), cost=0.25),
        _execution(noon, tenant="globex", agent="secret", tokens=(100, 100), cost=0.5),
        _execution(noon + timedelta(days=2), ExecutionStatus.RUNNING, tenant="globex", tokens=(7, 0), cost=None),
    ]:
        await state_store.create_execution(execution)

    everyone = await state_store.cost_per_day(first_day=FIRST_DAY, days=3)
    acme = await state_store.cost_per_day(first_day=FIRST_DAY, days=3, tenant="acme")
    nobody = await state_store.cost_per_day(first_day=FIRST_DAY, days=3, tenant="initech")

    assert [(d.executions, d.cost_usd) for d in everyone] == [(2, 0.75), (0, None), (1, None)]
    assert [t.tenant for t in everyone[0].tenants] == ["acme", "globex"]
    assert everyone[2].tenants == [TenantUsage(tenant="globex", executions=1, input_tokens=7, output_tokens=0)]
    assert [[t.tenant for t in d.tenants] for d in acme] == [["acme"], [], []]
    assert [[a.agent for a in d.agents] for d in acme] == [["writer"], [], []]
    assert all(d.agents == [] and d.tenants == [] and d.executions == 0 for d in nobody)
