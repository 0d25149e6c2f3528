"""Cache decorators of the two state store facets worth caching: finished executions
(`CachedExecutions` over an `ExecutionStore`) and agent states (`CachedSessions` over a
`SessionStore`), read-through on get, write-through on save, and the database alone when
the cache is down. Every other facet is served by the store itself: nothing forwards it.

Contract of both: answers exactly what the store answers, from the cache when it holds
the value. Reads fill the cache; a write that returned puts its value in the cache, a
write that raised (a stale `save_state`, ...) drops the cached value. A cache that is down
never fails a call: the store answers alone, and the outage is logged once (with the
trace id) until the cache answers again. The cache is consulted only while the store is
open (`CacheFront.open` to `close`, which `Stores.start` and `close` call), so calls
before and after fail as the closed store's do; the cache belongs to the caller, who
closes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.state import AgentState
from agentrunner.domain.steps import Step
from agentrunner.logs import get_logger
from agentrunner.ports.cache import Cache
from agentrunner.ports.state import ExecutionStore, IdempotencyClaim, SessionStore
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


class CacheFront:
    """The cache as the decorators use it, shared by them: reads, writes and drops that never
    fail (an outage is logged once, whichever decorator meets it, and the keys it may have
    left stale are dropped when the cache answers again), and only while the store is open.
    """

    def __init__(self, cache: Cache, *, ttl_seconds: float = 300.0) -> None:
        self._cache = cache
        self._ttl_seconds = ttl_seconds
        self._health = _CacheHealth()
        self._open = False

    def open(self) -> None:
        """The store is open: consult the cache from now on."""
        self._open = True

    def close(self) -> None:
        """The store is closing: leave the cache alone from now on."""
        self._open = False

    async def read_through(self, key: str, model: type[_Model], read: Callable[[], Awaitable[_Model]]) -> _Model:
        """The value cached under `key`, else what `read` returns, cached then (unless another
        was meanwhile)."""
        cached = await self.cached(key, model)
        if cached is not None:
            return cached
        value = await read()
        await self.remember(key, value, only_if_absent=True)
        return value

    async def write_through(self, key: str, write: Callable[[], Awaitable[None]], value: BaseModel) -> None:
        """Run `write`, then cache `value` under `key`; drop the key when `write` raised."""
        try:
            await write()
        except Exception:
            # Whether or not the write landed, what the cache holds may now be stale.
            await self.forget(key)
            raise
        await self.remember(key, value)

    async def cached(self, key: str, model: type[_Model]) -> _Model | None:
        """The `model` cached under `key`; None when absent or unreadable, when the cache is
        down or just came back, or while the store is closed."""
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
            await self.forget(key)
            return None

    async def remember(self, key: str, value: BaseModel, *, only_if_absent: bool = False) -> None:
        """Cache `value` under `key` (with `only_if_absent`, unless a value is there)."""
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

    async def forget(self, key: str) -> None:
        """Drop what the cache holds under `key`."""
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


class CachedExecutions:
    """`ExecutionStore` over `store`, with finished executions cached in `front`.

    Only executions in a terminal status are cached: they never change again, so a cached
    one is never stale, and the writes on the way there (queued, running: several per
    execution) cost no cache round trip. Reads of unfinished executions go to `store`.
    """

    def __init__(self, store: ExecutionStore, front: CacheFront) -> None:
        self._store = store
        self._front = front

    async def create_execution(
        self,
        execution: Execution,
        *,
        events: Sequence[Event] = (),
        idempotency: IdempotencyClaim | None = None,
        steps: Sequence[Step] = (),
    ) -> None:
        await self._store.create_execution(execution, events=events, idempotency=idempotency, steps=steps)
        if execution.status.is_terminal:
            await self._front.remember(execution_key(execution.execution_id), _in_utc(execution))

    async def save_execution(
        self,
        execution: Execution,
        *,
        events: Sequence[Event] = (),
        only_if: frozenset[ExecutionStatus] | None = None,
        steps: Sequence[Step] = (),
    ) -> None:
        if not execution.status.is_terminal:
            if only_if is not None and not any(status.is_terminal for status in only_if):
                # It was unfinished, so nothing is cached for it: no cache round trip.
                await self._store.save_execution(execution, events=events, only_if=only_if, steps=steps)
                return
            try:  # it may overwrite a finished one the cache holds
                await self._store.save_execution(execution, events=events, only_if=only_if, steps=steps)
            finally:
                await self._front.forget(execution_key(execution.execution_id))
            return
        await self._front.write_through(
            execution_key(execution.execution_id),
            lambda: self._store.save_execution(execution, events=events, only_if=only_if, steps=steps),
            _in_utc(execution),
        )

    async def start_execution(self, execution_id: str, *, worker: str, provider: str, model: str) -> Execution:
        # Only a queued or running execution starts, and it stays unfinished: never cached.
        return await self._store.start_execution(execution_id, worker=worker, provider=provider, model=model)

    async def get_execution(self, execution_id: str) -> Execution:
        key = execution_key(execution_id)
        cached = await self._front.cached(key, Execution)
        if cached is not None:
            return cached
        execution = await self._store.get_execution(execution_id)
        if execution.status.is_terminal:
            await self._front.remember(key, execution, only_if_absent=True)
        return execution


class CachedSessions:
    """`SessionStore` over `store`, with agent states cached in `front`."""

    def __init__(self, store: SessionStore, front: CacheFront) -> None:
        self._store = store
        self._front = front

    async def load_state(self, agent: str, session_id: str, *, tenant: str | None = None) -> AgentState:
        return await self._front.read_through(
            state_key(agent, session_id, tenant),
            AgentState,
            lambda: self._store.load_state(agent, session_id, tenant=tenant),
        )

    async def save_state(self, state: AgentState, *, expected_version: int | None) -> AgentState:
        key = state_key(state.agent, state.session_id, state.tenant)
        try:
            saved = await self._store.save_state(state, expected_version=expected_version)
        except Exception:
            await self._front.forget(key)
            raise
        await self._front.remember(key, _in_utc(saved))
        return saved

    async def delete_state(self, agent: str, session_id: str, *, tenant: str | None = None) -> None:
        try:
            await self._store.delete_state(agent, session_id, tenant=tenant)
        finally:
            await self._front.forget(state_key(agent, session_id, tenant))


def _in_utc(model: _Model) -> _Model:
    """`model` with its datetimes in UTC, as the store gives them back, so a cached value
    equals the one the store would have returned."""
    changes = {
        name: value.astimezone(UTC) for name, value in model if isinstance(value, datetime) and value.tzinfo is not None
    }
    return model.model_copy(update=changes) if changes else model
