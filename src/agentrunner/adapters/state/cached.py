"""A StateStore that keeps finished executions and agent states in a Cache in front of
another StateStore: read-through on get, write-through on save, and the database alone
when the cache is down."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.domain.event import DeadLetter, Event, StoredDeadLetter
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.plan import PlanRun, PlanRunStatus
from agentrunner.domain.schedule import Activity, Schedule, ScheduleFire
from agentrunner.domain.state import AgentState, UsageTotals
from agentrunner.domain.webhook import WebhookDelivery
from agentrunner.logs import get_logger
from agentrunner.ports.cache import Cache
from agentrunner.ports.state import (
    AgentRecord,
    ExecutionPage,
    FireClaim,
    IdempotencyClaim,
    IdempotentRequest,
    KeyedInvocation,
    OutboxEntry,
    StateStore,
    UnfinishedFire,
)
from agentrunner.tracing import current_trace_id

log = get_logger(__name__)

_Model = TypeVar("_Model", bound=BaseModel)


def execution_key(execution_id: str) -> str:
    """The cache key of an execution."""
    return f"execution:{execution_id}"


def state_key(agent: str, session_id: str, tenant: str | None = None) -> str:
    """The cache key of an agent's state in one session of one tenant (written, never
    parsed). Tenant and agent come with their lengths, so no choice of names (colons
    included) makes two sessions share a key, least of all two tenants'."""
    owner = tenant or ""
    return f"state:{len(owner)}:{owner}:{len(agent)}:{agent}:{session_id}"


# Keys whose cached value could not be replaced or dropped during an outage, remembered
# so they are dropped when the cache answers again; past this many, the TTL bounds them.
MAX_STALE_KEYS = 10_000


class _CacheHealth:
    """Whether the cache answered last time, so an outage is logged once, not per call,
    and which keys the outage may have left stale."""

    def __init__(self) -> None:
        self._down = False
        self._stale: set[str] = set()

    def failed(self, error: DependencyUnavailableError, stale_key: str | None = None) -> None:
        if not self._down:
            self._down = True
            log.warning("cache unavailable, reading from the database", error=str(error), trace_id=current_trace_id())
        if stale_key is not None and len(self._stale) < MAX_STALE_KEYS:
            self._stale.add(stale_key)

    def answered(self) -> list[str]:
        """Note that the cache answered; return the keys to drop now that it is back."""
        if not self._down:
            return []
        self._down = False
        log.info("cache available again", trace_id=current_trace_id(), stale_keys=len(self._stale))
        stale, self._stale = list(self._stale), set()
        return stale


class CachedStateStore:
    """StateStore (see `ports.StateStore`) over `store`, with finished executions and agent
    states cached in `cache` for `ttl_seconds`.

    Only executions in a terminal status are cached: they never change again, so a cached
    one is never stale, and the writes on the way there (queued, running: several per
    execution) cost no cache round trip. Reads of unfinished executions go to `store`.

    Contract: answers exactly what `store` answers, from the cache when it holds the value.
    Reads fill the cache; a write that returned puts its value in the cache, a write that
    raised (a stale `save_state`, ...) drops the cached value. A cache that is down never
    fails a call: the store answers alone, and the outage is logged once (with the trace
    id) until the cache answers again. Everything else is delegated to `store`, which
    `start` and `close` open and close; the cache belongs to the caller, who closes it.
    Until `start` and after `close` the cache is not consulted, so calls fail as the
    closed store's do.
    """

    def __init__(self, store: StateStore, cache: Cache, *, ttl_seconds: float = 300.0) -> None:
        self._store = store
        self._cache = cache
        self._ttl_seconds = ttl_seconds
        self._health = _CacheHealth()
        self._open = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self._store.start()
        self._open = True

    async def close(self) -> None:
        self._open = False
        await self._store.close()

    async def ping(self) -> None:
        await self._store.ping()

    # -- cached records --------------------------------------------------------------

    async def create_execution(
        self, execution: Execution, *, events: Sequence[Event] = (), idempotency: IdempotencyClaim | None = None
    ) -> None:
        await self._store.create_execution(execution, events=events, idempotency=idempotency)
        if execution.status.is_terminal:
            await self._remember(execution_key(execution.execution_id), _in_utc(execution))

    async def save_execution(
        self,
        execution: Execution,
        *,
        events: Sequence[Event] = (),
        only_if: frozenset[ExecutionStatus] | None = None,
    ) -> None:
        if not execution.status.is_terminal:
            if only_if is not None and not any(status.is_terminal for status in only_if):
                # It was unfinished, so nothing is cached for it: no cache round trip.
                await self._store.save_execution(execution, events=events, only_if=only_if)
                return
            try:  # it may overwrite a finished one the cache holds
                await self._store.save_execution(execution, events=events, only_if=only_if)
            finally:
                await self._forget(execution_key(execution.execution_id))
            return
        await self._write_through(
            execution_key(execution.execution_id),
            lambda: self._store.save_execution(execution, events=events, only_if=only_if),
            _in_utc(execution),
        )

    async def start_execution(self, execution_id: str, *, worker: str, provider: str, model: str) -> Execution:
        return await self._store.start_execution(execution_id, worker=worker, provider=provider, model=model)

    async def get_execution(self, execution_id: str) -> Execution:
        key = execution_key(execution_id)
        cached = await self._cached(key, Execution)
        if cached is not None:
            return cached
        execution = await self._store.get_execution(execution_id)
        if execution.status.is_terminal:
            await self._remember(key, execution, only_if_absent=True)
        return execution

    async def load_state(self, agent: str, session_id: str, *, tenant: str | None = None) -> AgentState:
        return await self._read_through(
            state_key(agent, session_id, tenant),
            AgentState,
            lambda: self._store.load_state(agent, session_id, tenant=tenant),
        )

    async def save_state(self, state: AgentState, *, expected_version: int | None) -> AgentState:
        key = state_key(state.agent, state.session_id, state.tenant)
        try:
            saved = await self._store.save_state(state, expected_version=expected_version)
        except Exception:
            await self._forget(key)
            raise
        await self._remember(key, _in_utc(saved))
        return saved

    async def delete_state(self, agent: str, session_id: str, *, tenant: str | None = None) -> None:
        try:
            await self._store.delete_state(agent, session_id, tenant=tenant)
        finally:
            await self._forget(state_key(agent, session_id, tenant))

    # -- delegated as they are -------------------------------------------------------

    async def list_executions(
        self,
        *,
        agent: str | None = None,
        status: ExecutionStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tenant: str | None = None,
    ) -> ExecutionPage:
        return await self._store.list_executions(agent=agent, status=status, limit=limit, cursor=cursor, tenant=tenant)

    async def usage(
        self,
        *,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        tenant: str | None = None,
    ) -> UsageTotals:
        return await self._store.usage(agent=agent, since=since, until=until, tenant=tenant)

    async def pending_events(self, *, limit: int = 100, older_than_seconds: float = 0.0) -> list[OutboxEntry]:
        return await self._store.pending_events(limit=limit, older_than_seconds=older_than_seconds)

    async def claim_idempotency_key(
        self,
        key: str,
        fingerprint: str,
        *,
        expired_before: datetime,
        abandoned_before: datetime,
        tenant: str | None = None,
    ) -> IdempotentRequest | None:
        return await self._store.claim_idempotency_key(
            key, fingerprint, expired_before=expired_before, abandoned_before=abandoned_before, tenant=tenant
        )

    async def keyed_invocation(self, key: str, *, expired_before: datetime) -> KeyedInvocation | None:
        return await self._store.keyed_invocation(key, expired_before=expired_before)

    async def touch_idempotency_key(self, key: str) -> None:
        await self._store.touch_idempotency_key(key)

    async def complete_idempotency_key(self, key: str, status_code: int, response: bytes, content_type: str) -> None:
        await self._store.complete_idempotency_key(key, status_code, response, content_type)

    async def release_idempotency_key(self, key: str) -> None:
        await self._store.release_idempotency_key(key)

    async def add_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        await self._store.add_webhook_delivery(delivery)

    async def claim_webhook_delivery(
        self, execution_id: str, *, now: datetime, lease_until: datetime
    ) -> WebhookDelivery | None:
        return await self._store.claim_webhook_delivery(execution_id, now=now, lease_until=lease_until)

    async def save_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        await self._store.save_webhook_delivery(delivery)

    async def due_webhook_deliveries(self, *, now: datetime, limit: int = 100) -> list[str]:
        return await self._store.due_webhook_deliveries(now=now, limit=limit)

    async def get_webhook_delivery(self, execution_id: str) -> WebhookDelivery | None:
        return await self._store.get_webhook_delivery(execution_id)

    async def mark_published(self, entry_ids: Sequence[str]) -> None:
        await self._store.mark_published(entry_ids)

    async def record_dead_letter(self, letter: DeadLetter, *, tenant: str | None = None) -> StoredDeadLetter:
        return await self._store.record_dead_letter(letter, tenant=tenant)

    async def list_dead_letters(
        self, *, include_replayed: bool = False, limit: int = 100, tenant: str | None = None
    ) -> list[StoredDeadLetter]:
        return await self._store.list_dead_letters(include_replayed=include_replayed, limit=limit, tenant=tenant)

    async def get_dead_letter(self, letter_id: str) -> StoredDeadLetter:
        return await self._store.get_dead_letter(letter_id)

    async def mark_dead_letter_replayed(self, letter_id: str) -> StoredDeadLetter:
        return await self._store.mark_dead_letter_replayed(letter_id)

    async def delete_dead_letter(self, letter_id: str) -> None:
        await self._store.delete_dead_letter(letter_id)

    async def sync_agents(self, agents: Sequence[AgentRecord]) -> None:
        await self._store.sync_agents(agents)

    async def list_agents(self) -> list[AgentRecord]:
        return await self._store.list_agents()

    async def sync_config_schedules(self, schedules: Sequence[Schedule]) -> None:
        await self._store.sync_config_schedules(schedules)

    async def create_schedule(self, schedule: Schedule) -> Schedule:
        return await self._store.create_schedule(schedule)

    async def get_schedule(self, schedule_id: str) -> Schedule:
        return await self._store.get_schedule(schedule_id)

    async def list_schedules(self, *, agent: str | None = None, tenant: str | None = None) -> list[Schedule]:
        return await self._store.list_schedules(agent=agent, tenant=tenant)

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._store.delete_schedule(schedule_id)

    async def set_schedule_paused(self, schedule_id: str, paused: bool) -> Schedule:
        return await self._store.set_schedule_paused(schedule_id, paused)

    async def schedules_version(self) -> str:
        return await self._store.schedules_version()

    async def schedule_activity(self, schedule_ids: Sequence[str]) -> dict[str, Activity]:
        return await self._store.schedule_activity(schedule_ids)

    # Executions these create are not cached: the first read fills the cache from the store.
    async def claim_fires(self, claims: Sequence[FireClaim]) -> list[ScheduleFire]:
        return await self._store.claim_fires(claims)

    async def release_fire(self, fire_id: str, execution: Execution, events: Sequence[Event] = ()) -> bool:
        return await self._store.release_fire(fire_id, execution, events)

    async def unfinished_fires(self, *, limit: int = 1000) -> list[UnfinishedFire]:
        return await self._store.unfinished_fires(limit=limit)

    async def list_fires(
        self, schedule_id: str, *, limit: int = 50, before: datetime | None = None
    ) -> list[ScheduleFire]:
        return await self._store.list_fires(schedule_id, limit=limit, before=before)

    # Plan runs are read and written by few callers, and every write is conditional on the
    # version read: served from the database, never cached.
    async def create_plan_run(self, run: PlanRun, *, events: Sequence[Event] = ()) -> PlanRun:
        return await self._store.create_plan_run(run, events=events)

    async def save_plan_run(self, run: PlanRun, *, events: Sequence[Event] = ()) -> PlanRun:
        return await self._store.save_plan_run(run, events=events)

    async def get_plan_run(self, run_id: str) -> PlanRun:
        return await self._store.get_plan_run(run_id)

    async def list_plan_runs(
        self,
        *,
        agent: str | None = None,
        status: PlanRunStatus | None = None,
        limit: int = 50,
        tenant: str | None = None,
    ) -> list[PlanRun]:
        return await self._store.list_plan_runs(agent=agent, status=status, limit=limit, tenant=tenant)

    # -- the cache, which may be down ------------------------------------------------

    async def _read_through(self, key: str, model: type[_Model], read: Callable[[], Awaitable[_Model]]) -> _Model:
        cached = await self._cached(key, model)
        if cached is not None:
            return cached
        value = await read()
        await self._remember(key, value, only_if_absent=True)
        return value

    async def _write_through(self, key: str, write: Callable[[], Awaitable[None]], value: BaseModel) -> None:
        try:
            await write()
        except Exception:
            # Whether or not the write landed, what the cache holds may now be stale.
            await self._forget(key)
            raise
        await self._remember(key, value)

    async def _cached(self, key: str, model: type[_Model]) -> _Model | None:
        if not self._open:
            return None
        try:
            raw = await self._cache.get(key)
        except DependencyUnavailableError as exc:
            self._health.failed(exc)
            return None
        if await self._answered():
            return None  # the cache was down: what it holds for this key may be stale
        if raw is None:
            return None
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            # Written by another version of agentrunner, or damaged: the store answers instead.
            log.warning("cached value unreadable, dropping it", key=key, error=str(exc), trace_id=current_trace_id())
            await self._forget(key)
            return None

    async def _remember(self, key: str, value: BaseModel, *, only_if_absent: bool = False) -> None:
        if not self._open:
            return
        raw = value.model_dump_json().encode()
        try:
            if only_if_absent:
                await self._cache.add(key, raw, self._ttl_seconds)
            else:
                await self._cache.set(key, raw, self._ttl_seconds)
        except DependencyUnavailableError as exc:
            self._health.failed(exc, stale_key=None if only_if_absent else key)
        else:
            await self._answered()

    async def _forget(self, key: str) -> None:
        if not self._open:
            return
        try:
            await self._cache.delete(key)
        except DependencyUnavailableError as exc:
            self._health.failed(exc, stale_key=key)
        else:
            await self._answered()

    async def _answered(self) -> bool:
        """Record that the cache answered; after an outage, drop the keys it may hold
        stale. True when this call ended an outage."""
        stale = self._health.answered()
        for index, key in enumerate(stale):
            try:
                await self._cache.delete(key)
            except DependencyUnavailableError as exc:
                for left in stale[index:]:
                    self._health.failed(exc, stale_key=left)
                break
        return bool(stale)


def _in_utc(model: _Model) -> _Model:
    """`model` with its datetimes in UTC, as the store gives them back, so a cached value
    equals the one the store would have returned."""
    changes = {
        name: value.astimezone(UTC) for name, value in model if isinstance(value, datetime) and value.tzinfo is not None
    }
    return model.model_copy(update=changes) if changes else model
