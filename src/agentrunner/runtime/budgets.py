"""Cost budgets: an agent with `limits.budget_usd` spends at most that much per day or
month (UTC). Past it, an invocation is refused and an execution that would start fails at
once, both with `budget_exceeded` saying what was spent, the limit and when it resets; an
execution already running finishes. At 80 % a `budget.warning.<agent>` event is published,
once per period.

Spend is the cost recorded on the agent's executions created in the period (the usage
totals of the state store), so every process sees the same figure. Each process reads it
at most once per SPEND_READ_SECONDS per agent (adding the cost of the runs it finishes
meanwhile), so a budget costs no query per invocation; what other processes spend within
that second can pass the limit by that much.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import AgentRunnerError, BudgetExceededError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, utcnow
from agentrunner.logs import get_logger
from agentrunner.ports.bus import EventBus
from agentrunner.ports.cache import Cache
from agentrunner.ports.state import ExecutionQueries
from agentrunner.runtime.topics import budget_warning_topic
from agentrunner.tracing import current_trace_id, new_trace_id

log = get_logger(__name__)

WARN_AT = 0.8
SPEND_READ_SECONDS = 1.0


class Budget(BaseModel):
    """An agent's (or a tenant's) spend against its budget in the current period."""

    agent: str | None = None
    tenant: str | None = None
    period: str
    limit_usd: float
    spent_usd: float
    period_start: datetime
    resets_at: datetime

    @property
    def who(self) -> str:
        return f"agent {self.agent!r}" if self.agent else f"tenant {self.tenant!r}"


@dataclass(frozen=True)
class TenantBudget:
    """The budget every tenant (API key) gets, from settings."""

    limit_usd: float
    period: str = "day"


def period_bounds(now: datetime, period: str) -> tuple[datetime, datetime]:
    """The start of `now`'s day or month (UTC) and the start of the next one."""
    now = now.astimezone(UTC)
    if period == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (start + timedelta(days=32)).replace(day=1)
        return start, following
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


class Budgets:
    """Checks and reports spend against `limits.budget_usd` (per agent) and the tenant
    budget of the settings (per API key)."""

    def __init__(
        self,
        *,
        store: ExecutionQueries,
        bus: EventBus,
        cache: Cache,
        tenant_budget: TenantBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._bus = bus
        self._cache = cache
        self._tenant_budget = tenant_budget
        self._clock = clock
        # "agent:<name>" or "tenant:<id>" -> (period start, spend read then plus what this
        # process saw finish since, when read)
        self._spent: dict[str, tuple[datetime, float, float]] = {}
        self._counted: dict[str, set[str]] = {}  # scope -> executions added since the read

    async def _spent_since(self, scope: str, start: datetime) -> float:
        known = self._spent.get(scope)
        now = self._clock()
        if known is not None and known[0] == start and now - known[2] < SPEND_READ_SECONDS:
            return known[1]
        kind, _, name = scope.partition(":")
        if kind == "agent":
            totals = await self._store.usage(agent=name, since=start)
        else:
            totals = await self._store.usage(tenant=name, since=start)
        spent = sum(a.cost_usd or 0.0 for a in totals.agents)
        self._spent[scope] = (start, spent, now)
        self._counted[scope] = set()
        return spent

    def spent(self, agent: str, tenant: str | None, execution_id: str, cost_usd: float | None) -> None:
        """Count a finished run's cost (once) until the next read of its agent's and its
        tenant's spend."""
        if not cost_usd:
            return
        for scope in [f"agent:{agent}"] + ([f"tenant:{tenant}"] if tenant else []):
            known = self._spent.get(scope)
            counted = self._counted.setdefault(scope, set())
            if known is None or execution_id in counted:
                continue
            counted.add(execution_id)
            self._spent[scope] = (known[0], known[1] + cost_usd, known[2])

    async def budget(self, config: AgentConfig, now: datetime | None = None) -> Budget | None:
        """The agent's spend against its budget now; None without a budget."""
        limit = config.limits.budget_usd
        if limit is None:
            return None
        start, resets = period_bounds(now or utcnow(), config.limits.budget_period)
        spent = await self._spent_since(f"agent:{config.name}", start)
        return Budget(
            agent=config.name,
            period=config.limits.budget_period,
            limit_usd=limit,
            spent_usd=round(spent, 6),
            period_start=start,
            resets_at=resets,
        )

    async def tenant_budget(self, tenant: str, now: datetime | None = None) -> Budget | None:
        """The tenant's spend against the tenant budget now; None without one."""
        if self._tenant_budget is None:
            return None
        start, resets = period_bounds(now or utcnow(), self._tenant_budget.period)
        spent = await self._spent_since(f"tenant:{tenant}", start)
        return Budget(
            tenant=tenant,
            period=self._tenant_budget.period,
            limit_usd=self._tenant_budget.limit_usd,
            spent_usd=round(spent, 6),
            period_start=start,
            resets_at=resets,
        )

    async def all(self, configs: list[AgentConfig], tenants: list[str]) -> list[Budget]:
        """The budgets of the agents that have one and of `tenants`, for `GET /usage`."""
        now = utcnow()
        budgets = [await self.budget(config, now) for config in configs]
        budgets += [await self.tenant_budget(tenant, now) for tenant in tenants]
        return [budget for budget in budgets if budget is not None]

    async def check(self, config: AgentConfig, tenant: str | None = None) -> None:
        """Raise `BudgetExceededError` when the agent, or the tenant, has spent its budget."""
        for budget in (await self.budget(config), await self.tenant_budget(tenant) if tenant else None):
            if budget is not None and budget.spent_usd >= budget.limit_usd:
                kind = "limits.budget_usd" if budget.agent else "TENANT_BUDGET_USD"
                raise BudgetExceededError(
                    f"{budget.who} spent ${budget.spent_usd:.4f} of its ${budget.limit_usd:.4f} "
                    f"{'daily' if budget.period == 'day' else 'monthly'} budget ({kind}); "
                    f"it resets at {budget.resets_at.isoformat()}",
                    agent=config.name,
                    tenant=budget.tenant,
                    spent_usd=budget.spent_usd,
                    limit_usd=budget.limit_usd,
                    resets_at=budget.resets_at.isoformat(),
                )

    async def after_run(self, config: AgentConfig, execution: Execution) -> None:
        """Count the run's cost; publish `budget.warning.<agent>` once the agent passes 80 %
        of its budget (once per period, across processes)."""
        self.spent(execution.agent, execution.tenant, execution.execution_id, execution.cost_usd)
        try:
            budget = await self.budget(config)
            if budget is None or budget.spent_usd < WARN_AT * budget.limit_usd:
                return
            key = f"budget-warned:{config.name}:{budget.period_start.isoformat()}"
            if not await self._cache.add(key, b"1", (budget.resets_at - utcnow()).total_seconds() + 60):
                return
            await self._bus.publish(
                Event(
                    topic=budget_warning_topic(config.name),
                    payload=budget.model_dump(mode="json")
                    | {"percent": round(100 * budget.spent_usd / budget.limit_usd)},
                    trace_id=current_trace_id() or new_trace_id(),
                )
            )
            log.warning("agent passed 80% of its budget", agent=config.name, spent_usd=budget.spent_usd)
        except AgentRunnerError as exc:
            log.warning("budget warning not checked", agent=config.name, error=exc.message)
