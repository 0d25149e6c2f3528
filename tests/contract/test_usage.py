"""Usage contract, on every StateStore backend: `usage()` over any window is the sum of the
executions created in it, whatever mix of hourly and daily buckets and live rows answers
it (adapters/state/usage_sql.py); an end written twice counts once; a tenant never sees
another's buckets."""

from __future__ import annotations

import asyncio
import importlib
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentrunner.adapters.state.usage_sql import TERMINAL
from agentrunner.domain.errors import ConflictError
from agentrunner.domain.event import new_id
from agentrunner.domain.execution import Execution, ExecutionStatus, Usage
from agentrunner.domain.state import AgentUsage, UsageTotals
from agentrunner.ports.state import StateStore

START = datetime(2026, 3, 9, 22, 40, tzinfo=UTC)  # a few days either side of midnights and hours
UNFINISHED = frozenset(s for s in ExecutionStatus if not s.is_terminal)
TERMINAL_STATUSES = [ExecutionStatus(s) for s in TERMINAL]


def _execution(
    created_at: datetime,
    status: ExecutionStatus = ExecutionStatus.SUCCEEDED,
    *,
    agent: str = "writer",
    tenant: str | None = "acme",
    tokens: tuple[int, int] = (3, 5),
    cost: float | None = 0.25,
) -> Execution:
    return Execution(
        execution_id=new_id(),
        agent=agent,
        status=status,
        tenant=tenant,
        usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]),
        cost_usd=cost,
        trace_id=new_id(),
        created_at=created_at,
    )


def _expected(
    executions: list[Execution],
    *,
    agent: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    tenant: str | None = None,
) -> UsageTotals:
    """The usage `usage()` must answer, summed from the executions themselves."""
    chosen = [
        e
        for e in executions
        if (agent is None or e.agent == agent)
        and (tenant is None or e.tenant == tenant)
        and (since is None or e.created_at >= since)
        and (until is None or e.created_at < until)
    ]
    agents = []
    for name in sorted({e.agent for e in chosen}):
        mine = [e for e in chosen if e.agent == name]
        costs = [e.cost_usd for e in mine if e.cost_usd is not None]
        agents.append(
            AgentUsage(
                agent=name,
                executions=len(mine),
                input_tokens=sum(e.usage.input_tokens for e in mine),
                output_tokens=sum(e.usage.output_tokens for e in mine),
                cost_usd=round(sum(costs), 8) if costs else None,
            )
        )
    return UsageTotals.of(agents, since=since, until=until)


def _windows() -> list[dict[str, Any]]:
    hour, day = timedelta(hours=1), timedelta(days=1)
    midnight = datetime(2026, 3, 10, tzinfo=UTC)
    return [
        {},
        {"since": midnight},  # whole days to the end
        {"until": midnight + 2 * day},  # everything before a midnight
        {"since": midnight, "until": midnight + 2 * day},  # whole days only
        {"since": midnight + 5 * hour, "until": midnight + 2 * day + 7 * hour},  # days and hours
        {"since": START + timedelta(minutes=7), "until": START + 3 * day + timedelta(minutes=13)},  # cut hours
        {"since": midnight + 3 * hour + timedelta(minutes=10), "until": midnight + 3 * hour + timedelta(minutes=50)},
        {"since": midnight + 3 * hour + timedelta(minutes=10), "until": midnight + 9 * hour + timedelta(minutes=5)},
        {"since": START + timedelta(minutes=1)},
        {"until": START + day + timedelta(minutes=31)},
        {"since": midnight + day, "until": midnight + day},  # empty
    ]


async def test_usage_is_the_sum_of_the_executions_created_in_any_window(state_store: StateStore) -> None:
    rng = random.Random(23)
    executions = []
    for _ in range(80):
        created_at = START + timedelta(minutes=rng.randrange(0, 4 * 24 * 60), microseconds=rng.randrange(10**6))
        execution = _execution(
            created_at,
            rng.choice(list(ExecutionStatus)),
            agent=rng.choice(["writer", "reader", "critic"]),
            tenant=rng.choice(["acme", "globex", None]),
            tokens=(rng.randrange(100), rng.randrange(100)),
            cost=rng.choice([0.25, 0.125, 0.5, None]),  # exact in binary: sums do not depend on order
        )
        executions.append(execution)
        await state_store.create_execution(execution)
    # Some live ends, as a worker writes them: queued, running, then ended with its usage.
    for i in range(12):
        queued = _execution(START + timedelta(hours=7 * i, minutes=i), ExecutionStatus.QUEUED, tokens=(0, 0), cost=None)
        await state_store.create_execution(queued)
        running = queued.model_copy(update={"status": ExecutionStatus.RUNNING})
        await state_store.save_execution(running, only_if=frozenset({ExecutionStatus.QUEUED}))
        ended = running.model_copy(
            update={
                "status": TERMINAL_STATUSES[i % 4],
                "usage": Usage(input_tokens=i, output_tokens=1),
                "cost_usd": 0.5,
            }
        )
        await state_store.save_execution(ended, only_if=UNFINISHED)
        executions.append(ended)

    for window in _windows():
        for scope in [{}, {"tenant": "acme"}, {"agent": "writer"}, {"agent": "reader", "tenant": "globex"}]:
            query = window | scope
            assert await state_store.usage(**query) == _expected(executions, **query), query


async def test_an_end_written_twice_counts_once_and_a_changed_end_counts_its_new_usage(
    state_store: StateStore,
) -> None:
    queued = _execution(START, ExecutionStatus.QUEUED, tokens=(0, 0), cost=None)
    await state_store.create_execution(queued)
    ended = queued.model_copy(
        update={"status": ExecutionStatus.SUCCEEDED, "usage": Usage(input_tokens=7, output_tokens=2)}
    )

    await state_store.save_execution(ended, only_if=UNFINISHED)
    with pytest.raises(ConflictError):  # the redelivered end: refused, so nothing counted
        await state_store.save_execution(ended, only_if=UNFINISHED)
    await state_store.save_execution(ended)  # written again unconditionally: the same usage
    assert await state_store.usage() == _expected([ended])
    assert (await state_store.usage(since=START - timedelta(days=1))).executions == 1

    recounted = ended.model_copy(
        update={"status": ExecutionStatus.FAILED, "usage": Usage(input_tokens=9), "cost_usd": 0.25}
    )
    await state_store.save_execution(recounted)
    assert await state_store.usage() == _expected([recounted])
    reopened = recounted.model_copy(update={"status": ExecutionStatus.WAITING_APPROVAL})  # unfinished again
    await state_store.save_execution(reopened)
    assert await state_store.usage(since=START - timedelta(hours=1)) == _expected(
        [reopened], since=START - timedelta(hours=1)
    )


async def test_ends_of_one_agent_at_once_each_count_once(
    state_store_factory: Callable[[], StateStore],
) -> None:
    stores = [state_store_factory() for _ in range(4)]  # connections of their own, as workers have
    for store in stores:
        await store.start()
    queued = [_execution(START, ExecutionStatus.QUEUED, tokens=(0, 0), cost=None) for _ in range(40)]
    for execution in queued:
        await stores[0].create_execution(execution)
    ended = [
        e.model_copy(update={"status": ExecutionStatus.SUCCEEDED, "usage": Usage(input_tokens=i), "cost_usd": 0.25})
        for i, e in enumerate(queued)
    ]

    async def end(execution: Execution, store: StateStore) -> None:
        await store.save_execution(execution, only_if=UNFINISHED)

    await asyncio.gather(*(end(e, stores[i % len(stores)]) for i, e in enumerate(ended)))

    assert await stores[0].usage() == _expected(ended)
    assert await stores[0].usage(since=START - timedelta(minutes=5)) == _expected(
        ended, since=START - timedelta(minutes=5)
    )


async def test_a_tenant_never_counts_another_tenants_usage_in_the_same_hour_and_day(state_store: StateStore) -> None:
    mine = [_execution(START + timedelta(minutes=i), tenant="acme", tokens=(1, 1), cost=0.25) for i in range(3)]
    theirs = [_execution(START + timedelta(minutes=i), tenant="globex", tokens=(100, 100), cost=0.5) for i in range(4)]
    anonymous = [_execution(START, tenant=None, tokens=(10, 10), cost=None)]
    for execution in mine + theirs + anonymous:
        await state_store.create_execution(execution)

    windows: list[dict[str, Any]] = [{}, {"since": START - timedelta(days=2), "until": START + timedelta(days=2)}]
    for window in [*windows, {"since": START}]:
        acme = await state_store.usage(tenant="acme", **window)
        assert (acme.executions, acme.input_tokens, acme.cost_usd) == (3, 3, 0.75), window
        assert (await state_store.usage(tenant="initech", **window)).agents == [], window
        assert (await state_store.usage(**window)).executions == 8, window


def test_the_triggers_count_the_terminal_statuses_of_the_domain() -> None:
    migration = importlib.import_module("agentrunner.adapters.state.migrations.versions.0020_usage_hourly")
    assert sorted(re.findall(r"'(\w+)'", migration.TERMINAL)) == TERMINAL
