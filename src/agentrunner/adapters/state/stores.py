"""The state store by facet: what the node builds once and hands, facet by facet, to its
engines (`ports/state.py` says why the store is split).

One SQL store serves every facet, so writes that span aggregates stay one transaction;
with a cache, the two facets worth caching (executions, sessions) are served through the
cache decorators instead (`cached.py`), and every other facet by the store itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentrunner.adapters.state.cached import CachedExecutions, CachedSessions, CacheFront
from agentrunner.ports.agent_versions import AgentVersions
from agentrunner.ports.audit import AuditLog
from agentrunner.ports.cache import Cache
from agentrunner.ports.evals import EvalRuns
from agentrunner.ports.retention import Retention
from agentrunner.ports.state import (
    AgentRecords,
    DeadLetterStore,
    ExecutionQueries,
    ExecutionStore,
    IdempotencyStore,
    Outbox,
    PlanRunStore,
    ScheduleStore,
    SessionStore,
    StateStore,
    StepJournal,
    WebhookDeliveryStore,
)
from agentrunner.ports.stats import ExecutionAggregates


@dataclass(frozen=True, slots=True, kw_only=True)
class Stores:
    """One field per facet, and the lifecycle of the whole: `start` opens the database and
    then the cache in front of it, `close` the other way round (the cache itself belongs to
    the caller, who closes it)."""

    database: StateStore
    executions: ExecutionStore
    queries: ExecutionQueries
    aggregates: ExecutionAggregates  # the overview's counts per time bucket: never cached
    outbox: Outbox
    sessions: SessionStore
    idempotency: IdempotencyStore
    webhook_deliveries: WebhookDeliveryStore
    dead_letters: DeadLetterStore
    agents: AgentRecords
    agent_versions: AgentVersions  # written on a reload, read by the API: never cached
    eval_runs: EvalRuns  # rewritten as cases end, read by polling callers: never cached
    schedules: ScheduleStore
    plan_runs: PlanRunStore
    steps: StepJournal  # written on the hot path, read when a run resumes: never cached
    retention: Retention  # straight to the database: the purge has nothing to ask a cache
    audit: AuditLog  # written once, read rarely: never cached
    cache: CacheFront | None = None

    @classmethod
    def over(cls, database: StateStore, cache: Cache | None = None, *, ttl_seconds: float = 300.0) -> Stores:
        """Every facet from `database`; executions and sessions through `cache` when given."""
        front = CacheFront(cache, ttl_seconds=ttl_seconds) if cache is not None else None
        return cls(
            database=database,
            executions=CachedExecutions(database, front) if front else database,
            queries=database,
            aggregates=database,
            outbox=database,
            sessions=CachedSessions(database, front) if front else database,
            idempotency=database,
            webhook_deliveries=database,
            dead_letters=database,
            agents=database,
            agent_versions=database,
            eval_runs=database,
            schedules=database,
            plan_runs=database,
            steps=database,
            retention=database,
            audit=database,
            cache=front,
        )

    async def start(self) -> None:
        """Open the database (its schema checked or migrated), then consult the cache."""
        await self.database.start()
        if self.cache is not None:
            self.cache.open()

    async def close(self) -> None:
        """Stop consulting the cache, then release the database's connections."""
        if self.cache is not None:
            self.cache.close()
        await self.database.close()
