"""Backends of every port, as parameterised fixtures: each contract test runs once per backend.

A new backend is one more entry in the `params` of its port's fixture (and, when it needs a
server, a marker on that param).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from agentrunner.adapters.bus.memory import InMemoryEventBus
from agentrunner.adapters.cache.memory import InMemoryCache
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.ports import Cache, EventBus, StateStore

# Small delays keep the retry tests fast; an event gets len(RETRY_DELAYS) + 1 deliveries.
RETRY_DELAYS: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1

# Teardown must not hang on a handler a failed test left blocked.
BUS_TEARDOWN_GRACE_SECONDS = 0.5


# -- StateStore ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def state_store_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty database of this test's own, once per StateStore backend.

    A sync fixture on purpose: `postgres_url` is async, and only a sync fixture can pull it
    in with `getfixturevalue` without re-entering the running event loop.
    """
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def state_store_factory(state_store_url: str) -> AsyncIterator[Callable[[], SQLStateStore]]:
    """Builds unstarted stores on this test's database; closes all of them afterwards."""
    stores: list[SQLStateStore] = []

    def build() -> SQLStateStore:
        store = SQLStateStore(state_store_url, pool_size=2, max_overflow=2)
        stores.append(store)
        return store

    yield build
    for store in stores:
        await store.close()


@pytest.fixture
async def state_store(state_store_factory: Callable[[], SQLStateStore]) -> StateStore:
    """A started StateStore on an empty database, once per backend (`state_store_factory` closes it)."""
    store = state_store_factory()
    await store.start()
    return store


# -- EventBus -----------------------------------------------------------------------------


def _build_bus(backend: str) -> InMemoryEventBus:
    if backend == "memory":
        return InMemoryEventBus(retry_delays=RETRY_DELAYS)
    raise AssertionError(f"unknown event bus backend {backend!r}")


@pytest.fixture(params=["memory"])
async def event_bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    """A started EventBus with small retry delays, once per backend."""
    bus = _build_bus(request.param)
    await bus.start()
    yield bus
    await bus.close(grace_seconds=BUS_TEARDOWN_GRACE_SECONDS)


# -- Cache --------------------------------------------------------------------------------


def _build_cache(backend: str) -> Cache:
    if backend == "memory":
        return InMemoryCache()
    raise AssertionError(f"unknown cache backend {backend!r}")


@pytest.fixture(params=["memory"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    """An empty Cache, once per backend."""
    built = _build_cache(request.param)
    yield built
    await built.close()
