"""The cache decorators (`CachedExecutions`, `CachedSessions`, as `Stores.over` puts them in
front of the database): they read through and write through the cache, and carry on with the
database alone, logging the outage once, when the cache is down.

The StateStore contract itself runs over the cached store in test_state_store.py; this
suite proves what the cache adds: which calls reach the database, and what a cache outage
looks like.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from agentrunner.adapters.cache.redis import RedisCache
from agentrunner.adapters.state.cached import execution_key, state_key
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.adapters.state.stores import Stores
from agentrunner.domain.errors import (
    ConflictError,
    DependencyUnavailableError,
    ExecutionNotFoundError,
    StateNotFoundError,
)
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.state import AgentState
from agentrunner.ports.cache import Cache
from agentrunner.tracing import traced
from tests.contract.conftest import open_cache
from tests.ports import free_port

LONG_TTL = 60.0
CREATED = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
# Slack thread sessions look like this: the key holds the colons as they are.
SESSION = "slack:C0123:1700000000.000100"
UNAVAILABLE = "cache unavailable, reading from the database"
AVAILABLE_AGAIN = "cache available again"

# The deployments: embedded (SQLite + in-process cache) and distributed (PostgreSQL + Redis).
CACHED_BACKENDS = [
    pytest.param(("sqlite", "memory"), id="sqlite+memory-cache"),
    pytest.param(("postgres", "redis"), id="postgres+redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
]
DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class CountingStore(SQLStateStore):
    """The real SQL store, counting the reads that reach it."""

    def __init__(self, url: str) -> None:
        super().__init__(url, pool_size=2, max_overflow=2)
        self.reads: Counter[str] = Counter()

    async def get_execution(self, execution_id: str) -> Execution:
        self.reads["get_execution"] += 1
        return await super().get_execution(execution_id)

    async def load_state(self, agent: str, session_id: str, *, tenant: str | None = None) -> AgentState:
        self.reads["load_state"] += 1
        return await super().load_state(agent, session_id, tenant=tenant)


class SwitchableCache:
    """A Cache over a dict that can be switched off, failing then as RedisCache does when
    Redis is down."""

    def __init__(self) -> None:
        self.up = True
        self._entries: dict[str, tuple[bytes, float]] = {}

    def _answer(self) -> None:
        if not self.up:
            raise DependencyUnavailableError("cache switched off")

    async def get(self, key: str) -> bytes | None:
        self._answer()
        value, expires_at = self._entries.get(key, (b"", 0.0))
        return value if time.monotonic() < expires_at else None

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._answer()
        self._entries[key] = (value, time.monotonic() + ttl_seconds)

    async def add(self, key: str, value: bytes, ttl_seconds: float) -> bool:
        if await self.get(key) is not None:
            return False
        await self.set(key, value, ttl_seconds)
        return True

    async def ping(self) -> None:
        self._answer()

    async def delete(self, key: str) -> None:
        self._answer()
        self._entries.pop(key, None)

    async def close(self) -> None:
        self._entries.clear()


def _execution(execution_id: str = "exec-1", **fields: Any) -> Execution:
    return Execution(
        execution_id=execution_id, agent="writer", trace_id=f"trace-{execution_id}", created_at=CREATED, **fields
    )


def _state(**fields: Any) -> AgentState:
    return AgentState(agent="writer", session_id=SESSION, **fields)


def _logged(entries: list[MutableMapping[str, Any]], message: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in entries if entry["event"] == message]


@asynccontextmanager
async def started(store: Stores) -> AsyncIterator[Stores]:
    await store.start()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=CACHED_BACKENDS)
def cached_backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(database, cache) of a deployment; sync so it can pull in the async `postgres_url`."""
    database, cache = request.param
    url: str = request.getfixturevalue(f"{database}_url")
    return url, cache


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database of this test's own, for the tests that bring their own cache."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def cache_in_front(cached_backend: tuple[str, str]) -> AsyncIterator[Cache]:
    async with open_cache(cached_backend[1]) as cache:
        yield cache


@pytest.fixture
def database(cached_backend: tuple[str, str]) -> CountingStore:
    """The database behind `cached`, which starts and closes it."""
    return CountingStore(cached_backend[0])


@pytest.fixture
async def cached(database: CountingStore, cache_in_front: Cache) -> AsyncIterator[Stores]:
    async with started(Stores.over(database, cache_in_front, ttl_seconds=LONG_TTL)) as store:
        yield store


# -- read-through ---------------------------------------------------------------------------


async def test_a_finished_execution_read_once_is_then_answered_by_the_cache(
    cached: Stores, database: CountingStore
) -> None:
    original = _execution(status=ExecutionStatus.SUCCEEDED, output="done")
    await database.create_execution(original)

    first = await cached.executions.get_execution("exec-1")
    await database.save_execution(original.model_copy(update={"output": "changed behind the cache's back"}))
    second = await cached.executions.get_execution("exec-1")

    assert first == second == original
    assert database.reads["get_execution"] == 1


@pytest.mark.parametrize("status", [ExecutionStatus.QUEUED, ExecutionStatus.RUNNING])
async def test_an_unfinished_execution_is_always_read_from_the_database(
    cached: Stores, database: CountingStore, cache_in_front: Cache, status: ExecutionStatus
) -> None:
    created = _execution(status=status)
    await cached.executions.create_execution(created)
    first = await cached.executions.get_execution("exec-1")
    moved_on = created.model_copy(update={"status": ExecutionStatus.RUNNING, "attempts": 2})
    await cached.executions.save_execution(moved_on)
    second = await cached.executions.get_execution("exec-1")

    assert (first, second) == (created, moved_on)
    assert database.reads["get_execution"] == 2
    assert await cache_in_front.get(execution_key("exec-1")) is None


async def test_a_state_read_once_is_then_answered_by_the_cache(cached: Stores, database: CountingStore) -> None:
    saved = await database.save_state(_state(memory={"n": 1}), expected_version=0)

    first = await cached.sessions.load_state("writer", SESSION)
    await database.save_state(_state(memory={"n": 2}), expected_version=1)
    second = await cached.sessions.load_state("writer", SESSION)

    assert first == second == saved
    assert database.reads["load_state"] == 1


async def test_a_missing_execution_is_not_cached(cached: Stores, database: CountingStore) -> None:
    finished = _execution(status=ExecutionStatus.FAILED)
    with pytest.raises(ExecutionNotFoundError):
        await cached.executions.get_execution("exec-1")
    await database.create_execution(finished)

    assert await cached.executions.get_execution("exec-1") == finished
    assert database.reads["get_execution"] == 2


async def test_an_unreadable_cached_value_is_dropped_and_the_database_answers(
    cached: Stores, database: CountingStore, cache_in_front: Cache
) -> None:
    finished = _execution(status=ExecutionStatus.CANCELLED)
    await database.create_execution(finished)
    await cache_in_front.set(execution_key("exec-1"), b'{"not": "an execution"}', LONG_TTL)

    with capture_logs() as entries:
        assert await cached.executions.get_execution("exec-1") == finished
    assert await cached.executions.get_execution("exec-1") == finished

    assert database.reads["get_execution"] == 1
    assert len(_logged(entries, "cached value unreadable, dropping it")) == 1


# -- write-through --------------------------------------------------------------------------


async def test_an_execution_saved_finished_is_answered_by_the_cache(cached: Stores, database: CountingStore) -> None:
    created = _execution()
    await cached.executions.create_execution(created)

    finished = created.model_copy(update={"status": ExecutionStatus.SUCCEEDED, "output": "done"})
    await cached.executions.save_execution(finished)

    assert await cached.executions.get_execution("exec-1") == finished
    assert database.reads["get_execution"] == 0
    assert await database.get_execution("exec-1") == finished


async def test_saved_states_are_answered_by_the_cache(cached: Stores, database: CountingStore) -> None:
    first = await cached.sessions.save_state(_state(memory={"n": 1}), expected_version=0)
    assert await cached.sessions.load_state("writer", SESSION) == first

    second = await cached.sessions.save_state(_state(memory={"n": 2}), expected_version=first.version)

    assert await cached.sessions.load_state("writer", SESSION) == second
    assert second.version == 2
    assert database.reads["load_state"] == 0
    assert await database.load_state("writer", SESSION) == second


async def test_a_deleted_state_is_gone_from_the_cache(cached: Stores, database: CountingStore) -> None:
    await cached.sessions.save_state(_state(), expected_version=0)
    assert (await cached.sessions.load_state("writer", SESSION)).version == 1

    await cached.sessions.delete_state("writer", SESSION)

    with pytest.raises(StateNotFoundError):
        await cached.sessions.load_state("writer", SESSION)
    assert database.reads["load_state"] == 1


async def test_a_stale_save_drops_the_cached_state(cached: Stores, database: CountingStore) -> None:
    mine = await cached.sessions.save_state(_state(memory={"by": "me"}), expected_version=0)
    theirs = await database.save_state(_state(memory={"by": "another node"}), expected_version=1)
    assert await cached.sessions.load_state("writer", SESSION) == mine  # the cache does not know yet

    with pytest.raises(ConflictError):
        await cached.sessions.save_state(_state(memory={"by": "me, again"}), expected_version=mine.version)

    assert await cached.sessions.load_state("writer", SESSION) == theirs
    assert database.reads["load_state"] == 1


def _three_megabyte_state() -> AgentState:
    words = random.Random(3).choices(["agent", "plan", "tool", "résumé", "✓", "cache", "node", "42"], k=600_000)
    history = [
        {"role": "user" if n % 2 else "assistant", "content": " ".join(words[n * 300 : (n + 1) * 300]), "n": n}
        for n in range(1_000)
    ]
    memory = {"notes": " ".join(words[300_000:]), "scores": [n / 7 for n in range(10_000)], "nested": {"ok": True}}
    state = _state(history=history, memory=memory)
    assert len(state.model_dump_json()) > 3_000_000
    return state


async def test_a_three_megabyte_state_round_trips_through_the_cache(
    cached: Stores, database: CountingStore, cache_in_front: Cache
) -> None:
    big = _three_megabyte_state()

    saved = await cached.sessions.save_state(big, expected_version=0)
    from_cache = await cached.sessions.load_state("writer", SESSION)
    from_database = await database.load_state("writer", SESSION)

    assert (from_cache.history, from_cache.memory) == (big.history, big.memory)
    assert from_cache == from_database == saved
    cached_json = await cache_in_front.get(state_key("writer", SESSION))
    assert cached_json is not None
    assert AgentState.model_validate_json(cached_json) == saved
    assert database.reads["load_state"] == 1


# -- lifecycle ------------------------------------------------------------------------------


async def test_close_leaves_the_cache_open_for_its_owner(database: CountingStore, cache_in_front: Cache) -> None:
    async with started(Stores.over(database, cache_in_front)) as store:
        await store.executions.create_execution(_execution(status=ExecutionStatus.SUCCEEDED))

    assert await cache_in_front.get(execution_key("exec-1")) is not None
    with pytest.raises(DependencyUnavailableError):
        await store.executions.get_execution("exec-1")


# -- cache outages --------------------------------------------------------------------------


async def test_with_redis_down_every_call_is_answered_by_the_database_and_one_warning_logged(
    database_url: str,
) -> None:
    dead_redis = RedisCache(f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    store = Stores.over(CountingStore(database_url), dead_redis)
    finished = _execution(status=ExecutionStatus.SUCCEEDED, output="done")

    with capture_logs() as entries, traced("trace-redis-down"):
        async with started(store):
            await store.executions.create_execution(_execution())
            assert await store.executions.get_execution("exec-1") == _execution()
            await store.executions.save_execution(finished)
            assert await store.executions.get_execution("exec-1") == finished
            saved = await store.sessions.save_state(_state(), expected_version=0)
            assert await store.sessions.load_state("writer", SESSION) == saved
            assert (await store.sessions.save_state(_state(), expected_version=saved.version)).version == 2
            await store.sessions.delete_state("writer", SESSION)
    await dead_redis.close()

    warnings = _logged(entries, UNAVAILABLE)
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["trace_id"] == "trace-redis-down"
    assert "127.0.0.1" in warnings[0]["error"]
    assert "s3cret" not in warnings[0]["error"]
    assert _logged(entries, AVAILABLE_AGAIN) == []


async def test_a_cache_that_comes_back_is_logged_once_and_the_next_outage_warned_again(
    database_url: str,
) -> None:
    cache = SwitchableCache()
    database = CountingStore(database_url)
    store = Stores.over(database, cache)
    finished = _execution(status=ExecutionStatus.SUCCEEDED, output="done")

    with capture_logs() as entries:
        async with started(store):
            await store.executions.create_execution(finished)
            cache.up = False
            for _ in range(3):
                assert await store.executions.get_execution("exec-1") == finished
            cache.up = True
            for _ in range(3):
                assert await store.executions.get_execution("exec-1") == finished
            cache.up = False
            assert await store.executions.get_execution("exec-1") == finished

    assert [(entry["event"], entry["log_level"]) for entry in entries] == [
        (UNAVAILABLE, "warning"),
        (AVAILABLE_AGAIN, "info"),
        (UNAVAILABLE, "warning"),
    ]
    # Down: the database answered three times; back up: the cache answered.
    assert database.reads["get_execution"] == 4


async def test_a_value_written_while_the_cache_was_down_is_not_served_stale_after_it_returns(
    database_url: str,
) -> None:
    cache = SwitchableCache()
    store = Stores.over(CountingStore(database_url), cache)
    finished = _execution(status=ExecutionStatus.SUCCEEDED, output="done")

    async with started(store):
        await store.executions.create_execution(_execution())
        assert (await store.executions.get_execution("exec-1")).status is ExecutionStatus.QUEUED
        cache.up = False
        await store.executions.save_execution(finished)
        cache.up = True

        assert await store.executions.get_execution("exec-1") == finished
        assert await store.executions.get_execution("exec-1") == finished
