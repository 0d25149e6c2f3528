"""Fixtures of the integration suites: a database on each backend, and a started store."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from agentrunner.adapters.bus.rabbitmq import RabbitMQEventBus
from agentrunner.adapters.providers.offline import Script
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.node import Node
from agentrunner.settings import Settings
from tests.blocking import no_blocking_calls
from tests.contract.conftest import RABBITMQ_URL, delete_broker_objects


@pytest.fixture(autouse=True)
def _no_blocking_calls() -> Iterator[None]:
    """Fails a test whose agentrunner code blocks the event loop (tests/blocking.py)."""
    with no_blocking_calls():
        yield


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A database of this test's own at the newest schema (no rows), on SQLite then on PostgreSQL."""
    # A sync fixture: resolving the async postgres_url from an async fixture would nest loops.
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest) -> str:
    """A database of this test's own without any table, on SQLite then on PostgreSQL: for
    the tests of the migrations, which must start where a new deployment starts."""
    url: str = request.getfixturevalue(f"empty_{request.param}_url")
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SQLStateStore]:
    """A started SQL state store on `database_url` (migrated to the newest schema)."""
    state_store = SQLStateStore(database_url)
    await state_store.start()
    yield state_store
    await state_store.close()


# The event buses a whole node is tested on.
BUSES = ["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)]


@pytest.fixture(
    params=[
        ("memory", "sqlite"),
        pytest.param(("rabbitmq", "postgres"), marks=[pytest.mark.rabbitmq, pytest.mark.postgres]),
    ],
    ids=["memory-sqlite", "rabbitmq-postgres"],
)
def platform(request: pytest.FixtureRequest) -> tuple[str, str]:
    """An event bus and a database of this test's own (a sync fixture: see database_url)."""
    bus, database = request.param
    url: str = request.getfixturevalue(f"{database}_url")
    return bus, url


@asynccontextmanager
async def node_on(
    bus: str,
    tmp_path: Path,
    agents: dict[str, str],
    *,
    script: Script | None = None,
    **settings: Any,
) -> AsyncIterator[Node]:
    """A started node on `bus` ("memory" or "rabbitmq", with a prefix of its own, on the
    shared broker unless `rabbitmq_url` names another), with `agents` (file name -> YAML)
    as its agent files; its broker objects on the shared broker go afterwards."""
    rabbitmq_url = settings.pop("rabbitmq_url", RABBITMQ_URL)
    (tmp_path / "agents").mkdir(exist_ok=True)
    for name, text in agents.items():
        (tmp_path / "agents" / name).write_text(text)
    configured = Settings(
        _env_file=None,
        agents_dir=tmp_path / "agents",
        data_dir=tmp_path,
        rabbitmq_url=rabbitmq_url if bus == "rabbitmq" else "",
        rabbitmq_exchange_prefix=f"test-{uuid4().hex[:12]}",
        **settings,
    )
    node = Node(configured, script=script)
    async with node.running():
        yield node
    if isinstance(node.bus, RabbitMQEventBus) and rabbitmq_url == RABBITMQ_URL:
        await delete_broker_objects(node.bus)


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What the event loop reports to its exception handler ("Future exception was never
    retrieved", "Task exception was never retrieved", ...) during the test."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    yield reported
    gc.collect()  # unretrieved futures report when they are collected
    loop.set_exception_handler(previous)


def unretrieved(reported: list[dict[str, Any]]) -> list[str]:
    """The reports of `loop_errors`, after a collection (unretrieved futures report then)."""
    gc.collect()
    return [f"{context.get('message')}: {context.get('exception')!r}" for context in reported]
