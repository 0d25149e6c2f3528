"""Backends of every port, as parameterised fixtures: each contract test runs once per backend.

A new backend is one more entry in the `params` of its port's fixture (and, when it needs a
server, a marker on that param).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast
from uuid import uuid4

import aio_pika
import pytest
from redis.asyncio import Redis

from agentrunner.adapters.bus.memory import InMemoryEventBus
from agentrunner.adapters.bus.rabbitmq import RabbitMQEventBus
from agentrunner.adapters.cache.memory import InMemoryCache
from agentrunner.adapters.cache.redis import RedisCache
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.adapters.state.stores import Stores
from agentrunner.adapters.telemetry.otel import OtelTracing
from agentrunner.domain.event import DeadLetter
from agentrunner.ports.bus import EventBus
from agentrunner.ports.cache import Cache
from agentrunner.ports.providers import LLMProvider
from agentrunner.ports.state import ExecutionStore, SessionStore, StateStore
from tests.blocking import no_blocking_calls
from tests.fakes.otlp_collector import FakeCollector
from tests.fakes.vendor import FakeVendor

# Small delays keep the retry tests fast; an event gets len(RETRY_DELAYS) + 1 deliveries.
RETRY_DELAYS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1

# Teardown must not hang on a handler a failed test left blocked.
BUS_TEARDOWN_GRACE_SECONDS = 0.5


@pytest.fixture(autouse=True)
def _no_blocking_calls() -> Iterator[None]:
    """Fails a test whose agentrunner code blocks the event loop (tests/blocking.py)."""
    with no_blocking_calls():
        yield


# -- StateStore ---------------------------------------------------------------------------

# (database, cache in front of it or None): the cached variants run the same contract, which
# is how we know the cache changes nothing a caller can see.
STATE_STORE_BACKENDS = [
    pytest.param(("sqlite", None), id="sqlite"),
    pytest.param(("postgres", None), id="postgres", marks=pytest.mark.postgres),
    pytest.param(("sqlite", "memory"), id="sqlite+memory-cache"),
    pytest.param(("postgres", "redis"), id="postgres+redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
]


_EXECUTION_METHODS = frozenset(name for name in vars(ExecutionStore) if not name.startswith("_"))
_SESSION_METHODS = frozenset(name for name in vars(SessionStore) if not name.startswith("_"))


class CachedDeployment:
    """The state store as a node with a cache sees it (`Stores.over(database, cache)`): the
    methods of `ExecutionStore` and `SessionStore` through the cache decorators, every other
    from the database. One object, because the contract tests call every facet on one store."""

    def __init__(self, stores: Stores) -> None:
        self._stores = stores

    async def start(self) -> None:
        await self._stores.start()

    async def close(self) -> None:
        await self._stores.close()

    def __getattr__(self, name: str) -> Any:
        if name in _EXECUTION_METHODS:
            return getattr(self._stores.executions, name)
        if name in _SESSION_METHODS:
            return getattr(self._stores.sessions, name)
        return getattr(self._stores.database, name)


@pytest.fixture(params=STATE_STORE_BACKENDS)
def state_store_backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The database and the cache (or None) of this run of a StateStore contract test."""
    backend: tuple[str, str | None] = request.param
    return backend


@pytest.fixture
def state_store_url(request: pytest.FixtureRequest, state_store_backend: tuple[str, str | None]) -> str:
    """The URL of an empty database (at the newest schema, no rows) of this test's own, once
    per StateStore backend.

    A sync fixture on purpose: `postgres_url` is async, and only a sync fixture can pull it
    in with `getfixturevalue` without re-entering the running event loop.
    """
    database, _ = state_store_backend
    url: str = request.getfixturevalue(f"{database}_url")
    return url


@pytest.fixture
async def state_store_factory(
    state_store_url: str, state_store_backend: tuple[str, str | None]
) -> AsyncIterator[Callable[[], StateStore]]:
    """Builds unstarted stores on this test's database; closes all of them afterwards.

    On a cached backend every store is a `CachedDeployment` over its own `SQLStateStore`,
    and all of them share one cache, as the nodes of a deployment share Redis.
    """
    _, cache_backend = state_store_backend
    stores: list[StateStore] = []
    async with AsyncExitStack() as stack:
        cache = await stack.enter_async_context(open_cache(cache_backend)) if cache_backend else None

        def build() -> StateStore:
            database = SQLStateStore(state_store_url, pool_size=2, max_overflow=2)
            store = cast(StateStore, CachedDeployment(Stores.over(database, cache))) if cache is not None else database
            stores.append(store)
            return store

        yield build
        for store in stores:
            await store.close()


@pytest.fixture
async def state_store(state_store_factory: Callable[[], StateStore]) -> StateStore:
    """A started StateStore on an empty database, once per backend (`state_store_factory` closes it)."""
    store = state_store_factory()
    await store.start()
    return store


@pytest.fixture(
    params=[pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]
)
def retention_url(request: pytest.FixtureRequest) -> str:
    """An empty database of this test's own, once per database (sync: see `state_store_url`)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def retention_stores(retention_url: str) -> AsyncIterator[Callable[[], Awaitable[SQLStateStore]]]:
    """Starts stores on `retention_url`: each is both the `StateStore` and the `Retention`
    port (the purge talks to the database, never through a cache). Closes all of them
    afterwards."""
    url = retention_url
    stores: list[SQLStateStore] = []

    async def start() -> SQLStateStore:
        store = SQLStateStore(url, pool_size=2, max_overflow=2)
        stores.append(store)
        await store.start()
        return store

    yield start
    for store in stores:
        await store.close()


# -- EventBus -----------------------------------------------------------------------------


# The broker scripts/services.sh starts; override for another one.
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")

# What each bus gave up on, collected through `subscribe_dead_letters` (see `dead_letters`).
DEAD_LETTERS: dict[int, list[DeadLetter]] = {}


def _build_bus(backend: str) -> InMemoryEventBus | RabbitMQEventBus:
    if backend == "memory":
        return InMemoryEventBus(retry_delays=RETRY_DELAYS)
    if backend == "rabbitmq":
        # A prefix of its own: this test's exchange and queues meet nobody else's.
        return RabbitMQEventBus(RABBITMQ_URL, prefix=f"test-{uuid4().hex[:12]}", retry_delays=RETRY_DELAYS)
    raise AssertionError(f"unknown event bus backend {backend!r}")


async def delete_broker_objects(bus: RabbitMQEventBus) -> None:
    """Remove the exchange and queues a test's bus declared."""
    exchange, queues = bus.declared
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        # RabbitMQ seen through the OpenTelemetry adapter (spans to a loopback collector):
        # tracing must change nothing a publisher or a handler can see.
        pytest.param("rabbitmq+otel", marks=pytest.mark.rabbitmq),
    ]
)
async def event_bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    """A started EventBus with small retry delays, once per backend; what it dead-letters
    is collected in DEAD_LETTERS."""
    async with _started_bus(request.param) as bus:
        yield bus


@asynccontextmanager
async def _started_bus(backend: str) -> AsyncIterator[EventBus]:
    inner = _build_bus(backend.removesuffix("+otel"))
    bus: EventBus = inner
    with contextlib.ExitStack() as stack:
        tracing: OtelTracing | None = None
        if backend.endswith("+otel"):
            collector = stack.enter_context(FakeCollector())
            tracing = OtelTracing(endpoint=collector.endpoint, service_name="contract", node_id="n", roles=["test"])
            bus = tracing.traced_bus(inner)
        await bus.start()
        letters = DEAD_LETTERS.setdefault(id(bus), [])

        async def collect(letter: DeadLetter) -> None:
            letters.append(letter)

        await bus.subscribe_dead_letters(collect)
        yield bus
        await bus.close(grace_seconds=BUS_TEARDOWN_GRACE_SECONDS)
        DEAD_LETTERS.pop(id(bus), None)
        if isinstance(inner, RabbitMQEventBus):
            await delete_broker_objects(inner)
        if tracing is not None:
            await tracing.close()


# -- Cache --------------------------------------------------------------------------------

# The server scripts/services.sh starts; override for another one.
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@asynccontextmanager
async def open_cache(backend: str) -> AsyncIterator[Cache]:
    """An empty Cache of `backend`, closed afterwards; a Redis one gets a key prefix of its
    own, so runs never see each other's keys, and its keys are deleted afterwards."""
    if backend == "memory":
        memory = InMemoryCache()
        try:
            yield memory
        finally:
            await memory.close()
    elif backend == "redis":
        prefix = f"agentrunner-test:{uuid4().hex}:"
        redis_cache = RedisCache(REDIS_URL, key_prefix=prefix)
        try:
            yield redis_cache
        finally:
            await redis_cache.close()
            await delete_redis_keys(prefix)
    else:
        raise AssertionError(f"unknown cache backend {backend!r}")


async def delete_redis_keys(prefix: str) -> None:
    """Delete every key under `prefix` from the test Redis."""
    client = Redis.from_url(REDIS_URL)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=500):
            await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    """An empty Cache, once per backend."""
    async with open_cache(request.param) as opened:
        yield opened


# The LLM vendors, each a loopback fake speaking its wire protocol (tests/fakes), driven
# through the provider adapter over the vendor's official SDK.
VENDORS = ["openai", "anthropic", "bedrock", "ollama"]


@pytest.fixture(params=VENDORS)
def fake(request: pytest.FixtureRequest) -> Iterator[FakeVendor]:
    module = importlib.import_module(f"tests.fakes.{request.param}_server")
    with module.running() as running:
        yield running


@pytest.fixture
async def provider(fake: FakeVendor) -> AsyncIterator[LLMProvider]:
    adapter = fake.provider(timeout=5)
    yield adapter
    await adapter.close()
