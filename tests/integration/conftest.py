"""Fixtures of the integration suites: a database on each backend, and a started store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentrunner.adapters.state.sql import SQLStateStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database of this test's own, on SQLite then on PostgreSQL."""
    # A sync fixture: resolving the async postgres_url from an async fixture would nest loops.
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SQLStateStore]:
    """A started SQL state store on `database_url` (migrated to the newest schema)."""
    state_store = SQLStateStore(database_url)
    await state_store.start()
    yield state_store
    await state_store.close()
