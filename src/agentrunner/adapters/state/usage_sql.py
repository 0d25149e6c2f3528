"""`GET /usage` (and the budgets) in SQL: the usage of executions created in [since, until),
read from the pre-aggregated buckets where the window covers them whole, and from the
live rows elsewhere.

`usage_hourly` and `usage_daily` hold every ended execution (live or purged), kept by
triggers in the transaction that writes the row (migration 0020). So the answer is, in
one statement (one snapshot):

- the daily buckets wholly inside the window, and the hourly ones between them and its
  edges (at most 2 x 23 hours): a month is ~30 x agents x tenants rows, not every execution;
- plus the unfinished executions of the window (the buckets count ended ones only; few,
  found by the status indexes);
- plus the ended executions of the window's partial hours: those in [since, its next
  hour), and minus those in [until, its next hour), since the hour `until` cuts is read
  whole from the bucket.

The hours counted from buckets are those whose start lies in [since, until); executions
already purged count in those and no others (as before the buckets, when only the purged
were rolled up); live ones count exactly by their creation time.

The overview's cost per day (`daily_usage_query`) asks the same of whole UTC days only, so
each day is its daily bucket plus its unfinished executions: one statement grouped by day,
agent and tenant answers every day of the window at once.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, func, literal, literal_column, select, union_all

from agentrunner.adapters.state.tables import ExecutionRow
from agentrunner.adapters.state.usage_tables import UsageDailyRow, UsageHourlyRow
from agentrunner.domain.execution import ExecutionStatus
from agentrunner.domain.state import AgentUsage, UsageTotals
from agentrunner.domain.stats import DayCost, TenantUsage

EXECUTIONS = cast("Table", ExecutionRow.__table__)
HOURLY = cast("Table", UsageHourlyRow.__table__)
DAILY = cast("Table", UsageDailyRow.__table__)

TERMINAL = sorted(status.value for status in ExecutionStatus if status.is_terminal)
UNFINISHED = sorted(status.value for status in ExecutionStatus if not status.is_terminal)
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)


def _ceil(moment: datetime, step: timedelta) -> datetime:
    floor = _floor(moment, step)
    return floor if floor == moment else floor + step


def _floor(moment: datetime, step: timedelta) -> datetime:
    if step == _DAY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def usage_query(
    *, agent: str | None, since: datetime | None, until: datetime | None, tenant: str | None
) -> Select[Any]:
    """Rows of (agent, executions, input tokens, output tokens, cost, priced), several per
    agent, some negative: summed per agent they are the usage of [since, until)."""
    hour_from = _ceil(since, _HOUR) if since else None  # buckets counted: [hour_from, hour_to)
    hour_to = _ceil(until, _HOUR) if until else None
    day_from = _ceil(hour_from, _DAY) if hour_from else None
    day_to = _floor(hour_to, _DAY) if hour_to else None
    parts: list[Select[Any]] = []

    def buckets(table: Table, column: str, start: datetime | None, end: datetime | None) -> None:
        if start is not None and end is not None and start >= end:
            return
        query = _bucket_sums(table, agent=agent, tenant=tenant)
        if start is not None:
            query = query.where(table.c[column] >= start)
        if end is not None:
            query = query.where(table.c[column] < end)
        parts.append(query)

    if day_from is not None and day_to is not None and day_from >= day_to:
        buckets(HOURLY, "hour", hour_from, hour_to)  # no whole day inside
    else:
        buckets(DAILY, "day", day_from, day_to)
        if hour_from is not None:
            buckets(HOURLY, "hour", hour_from, day_from)
        if hour_to is not None:
            buckets(HOURLY, "hour", day_to, hour_to)
    parts.append(_live_sums(UNFINISHED, since, until, agent=agent, tenant=tenant))
    if since is not None and hour_from != since:
        parts.append(_live_sums(TERMINAL, since, hour_from, agent=agent, tenant=tenant))
    if until is not None and hour_to != until:
        parts.append(_live_sums(TERMINAL, until, hour_to, agent=agent, tenant=tenant, sign=-1))
    return cast("Select[Any]", union_all(*parts))


def _bucket_sums(table: Table, *, agent: str | None, tenant: str | None) -> Select[Any]:
    query = select(
        table.c.agent,
        func.sum(table.c.executions),
        func.sum(table.c.input_tokens),
        func.sum(table.c.output_tokens),
        func.sum(table.c.cost_usd),
        func.sum(table.c.priced),
    ).group_by(table.c.agent)
    if agent:
        query = query.where(table.c.agent == agent)
    if tenant:
        query = query.where(table.c.tenant == tenant)
    return query


def _live_sums(
    statuses: list[str],
    start: datetime | None,
    end: datetime | None,
    *,
    agent: str | None,
    tenant: str | None,
    sign: int = 1,
) -> Select[Any]:
    """The usage of the executions in `statuses` created in [start, end), times `sign`."""

    def signed(value: ColumnElement[Any]) -> ColumnElement[Any]:
        return value if sign == 1 else literal(sign) * value

    query = select(
        ExecutionRow.agent,
        signed(func.count()),
        signed(func.coalesce(func.sum(ExecutionRow.input_tokens), 0)),
        signed(func.coalesce(func.sum(ExecutionRow.output_tokens), 0)),
        signed(func.coalesce(func.sum(ExecutionRow.cost_usd), 0.0)),
        signed(func.count(ExecutionRow.cost_usd)),
    ).where(
        # Constants, not parameters: PostgreSQL's generic plan of the prepared statement (from
        # its sixth run) then still knows how few executions are unfinished and takes a status
        # index, not a month of one agent's rows.
        ExecutionRow.status.in_([literal_column(f"'{status}'") for status in statuses])
    )
    if agent:
        query = query.where(ExecutionRow.agent == agent)
    if tenant:
        query = query.where(ExecutionRow.tenant == tenant)
    if start is not None:
        query = query.where(ExecutionRow.created_at >= start)
    if end is not None:
        query = query.where(ExecutionRow.created_at < end)
    return query.group_by(ExecutionRow.agent)


def daily_usage_query(
    *, since: datetime, until: datetime, agent: str | None, tenant: str | None, sqlite: bool
) -> Select[Any]:
    """Rows of (by, day, name, executions, input tokens, output tokens, cost, priced) over
    [since, until), both UTC midnights, `by` "agent" (`name` an agent) or "tenant" (a
    tenant, "" for none): summed per day and agent, each day's are the rows of `usage_query`
    for that day (its daily bucket, no hour cut, and its unfinished executions); per day and
    tenant, the same by tenant. Grouped apart, not by both: a row per agent or tenant a day,
    not per pair (a fifth of the rows with 5 tenants)."""
    # The day as the triggers of migration 0020 write it (constants: one GROUP BY expression).
    if sqlite:
        created = func.strftime(literal_column("'%Y-%m-%d 00:00:00.000000'"), ExecutionRow.created_at)
    else:
        created = func.date_trunc(literal_column("'day'"), ExecutionRow.created_at, literal_column("'UTC'"))
    keys = {
        "agent": (DAILY.c.agent, ExecutionRow.agent),
        "tenant": (DAILY.c.tenant, func.coalesce(ExecutionRow.tenant, literal_column("''"))),
    }
    parts: list[Select[Any]] = []
    for by, (bucket_key, live_key) in keys.items():
        kind: ColumnElement[str] = literal_column(f"'{by}'")
        bucket = select(
            kind,
            DAILY.c.day,
            bucket_key,
            func.sum(DAILY.c.executions),
            func.sum(DAILY.c.input_tokens),
            func.sum(DAILY.c.output_tokens),
            func.sum(DAILY.c.cost_usd),
            func.sum(DAILY.c.priced),
        ).where(DAILY.c.day >= since, DAILY.c.day < until)
        live = select(
            kind,
            created,
            live_key,
            func.count(),
            func.coalesce(func.sum(ExecutionRow.input_tokens), 0),
            func.coalesce(func.sum(ExecutionRow.output_tokens), 0),
            func.coalesce(func.sum(ExecutionRow.cost_usd), 0.0),
            func.count(ExecutionRow.cost_usd),
        ).where(
            ExecutionRow.status.in_([literal_column(f"'{status}'") for status in UNFINISHED]),
            ExecutionRow.created_at >= since,
            ExecutionRow.created_at < until,
        )
        if agent:
            bucket = bucket.where(DAILY.c.agent == agent)
            live = live.where(ExecutionRow.agent == agent)
        if tenant:
            bucket = bucket.where(DAILY.c.tenant == tenant)
            live = live.where(ExecutionRow.tenant == tenant)
        parts += [bucket.group_by(DAILY.c.day, bucket_key), live.group_by(created, live_key)]
    return cast("Select[Any]", union_all(*parts))


def cost_by_day(rows: list[Any], days: list[date]) -> list[DayCost]:
    """The rows of `daily_usage_query` as the figures of each of `days`, in their order."""
    per_day: dict[tuple[str, date], list[Any]] = {}
    for by, midnight, *figures in rows:  # a datetime: the type of the bucket's `day`
        per_day.setdefault((by, midnight.date()), []).append(figures)
    costs = []
    for day in days:
        agents = usage_by_agent(per_day.get(("agent", day), []))
        tenants = [  # summed as agents are, by name
            TenantUsage(**usage.model_dump(exclude={"agent"}), tenant=usage.agent)
            for usage in usage_by_agent(per_day.get(("tenant", day), []))
        ]
        totals = UsageTotals.of(agents, since=None, until=None)
        costs.append(
            DayCost(day=day, agents=agents, tenants=tenants, executions=totals.executions, cost_usd=totals.cost_usd)
        )
    return costs


def usage_by_agent(rows: list[Any]) -> list[AgentUsage]:
    """The rows of `usage_query` summed per agent, by name; agents with no execution left out."""
    sums: dict[str, list[float]] = {}
    for name, *values in rows:
        total = sums.setdefault(name, [0, 0, 0, 0.0, 0])
        for i, value in enumerate(values):
            total[i] += value or 0
    return [
        AgentUsage(
            agent=name,
            executions=int(count),
            input_tokens=int(tokens_in),
            output_tokens=int(tokens_out),
            # Rounded: the same spend summed from rows or from buckets differs in the last bits.
            cost_usd=round(float(cost), 8) if priced else None,
        )
        for name, (count, tokens_in, tokens_out, cost, priced) in sorted(sums.items())
        if count
    ]
