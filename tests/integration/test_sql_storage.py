"""How the SQL store keeps data: agent state over 1 MB gzip-compressed and read back
transparently; PostgreSQL connections with the configured statement timeout and pool."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from agentrunner.adapters.state import engine
from agentrunner.adapters.state.engine import in_flight
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.errors import DependencyUnavailableError, ExecutionNotFoundError
from agentrunner.domain.execution import Execution
from agentrunner.domain.state import AgentState
from tests.conftest import POSTGRES_ADMIN_URL


async def _raw_payload(url: str, session_id: str) -> bytes:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            query = text("SELECT payload FROM agent_state WHERE agent = 'chat' AND session_id = :s")
            value = await connection.scalar(query, {"s": session_id})
    finally:
        await engine.dispose()
    return bytes(value)


async def test_integers_past_64_bits_are_stored_and_read_back_exactly(store: SQLStateStore) -> None:
    huge = 2**64 + 12345
    small = AgentState(agent="chat", session_id="ints", memory={"huge": huge, "negative": -huge})
    large = AgentState(agent="chat", session_id="ints-big", memory={"huge": huge, "pad": "p" * 2_000_000})

    await store.save_state(small, expected_version=0)
    await store.save_state(large, expected_version=0)

    assert (await store.load_state("chat", "ints")).memory == {"huge": huge, "negative": -huge}
    assert (await store.load_state("chat", "ints-big")).memory["huge"] == huge


async def test_a_3_mb_state_is_stored_compressed_and_read_back_whole(store: SQLStateStore, database_url: str) -> None:
    history = [{"role": "user", "content": f"line {i}: " + "the same words again " * 15} for i in range(10_000)]
    state = AgentState(agent="chat", session_id="big", history=history, memory={"notes": "n" * 1000})

    await store.save_state(state, expected_version=0)
    raw = await _raw_payload(database_url, "big")
    loaded = await store.load_state("chat", "big")

    assert raw.startswith(b"\x1f\x8b"), "gzip magic bytes"
    assert len(raw) < 3_000_000 // 10
    assert loaded.history == history
    assert loaded.memory == {"notes": "n" * 1000}


async def test_a_small_state_is_stored_as_plain_json(store: SQLStateStore, database_url: str) -> None:
    await store.save_state(AgentState(agent="chat", session_id="small", memory={"k": "v"}), expected_version=0)

    raw = await _raw_payload(database_url, "small")

    assert raw == b'{"history":[],"memory":{"k":"v"}}'


@pytest.mark.postgres
async def test_postgres_connections_carry_the_statement_timeout_and_pool_size(postgres_url: str) -> None:
    store = SQLStateStore(postgres_url, statement_timeout_ms=1500, pool_size=3, max_overflow=1)
    await store.start()
    try:
        engine = store._engine  # the pool's own settings are what this test is about
        assert engine is not None
        async with engine.connect() as connection:
            timeout = await connection.scalar(text("SHOW statement_timeout"))
        pool_size = engine.pool.size()  # type: ignore[attr-defined]
    finally:
        await store.close()

    assert timeout == "1500ms"
    assert pool_size == 3


async def _drop_connections(url: str) -> int:
    """What a PostgreSQL restart does to a pool: every server connection to the database goes."""
    database = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        )
    finally:
        await admin.close()


@pytest.mark.postgres
async def test_connections_dropped_while_idle_are_replaced_before_use(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLStateStore(postgres_url)
    await store.start()
    try:
        await store.create_execution(Execution(execution_id="before", agent="a", trace_id="t"))
        monkeypatch.setattr(engine, "PING_AFTER_IDLE_SECONDS", 0.0)  # every pooled connection counts as idle
        dropped = await _drop_connections(postgres_url)

        await store.create_execution(Execution(execution_id="after", agent="a", trace_id="t"))
        found = await store.get_execution("after")
    finally:
        await store.close()

    assert dropped >= 1
    assert found.execution_id == "after"


@pytest.mark.postgres
async def test_connections_dropped_under_load_are_replaced_without_failing_a_call(postgres_url: str) -> None:
    store = SQLStateStore(postgres_url)
    await store.start()
    try:
        await asyncio.gather(*(store.ping() for _ in range(4)))  # several pooled connections, just used
        dropped = await _drop_connections(postgres_url)
        with pytest.raises(ExecutionNotFoundError):  # answered: the dead connection was replaced
            await store.get_execution("anything")
        await store.create_execution(Execution(execution_id="next", agent="a", trace_id="t"))
        calls_after = await asyncio.gather(*(store.get_execution("next") for _ in range(4)))
    finally:
        await store.close()

    assert dropped >= 2
    assert {execution.execution_id for execution in calls_after} == {"next"}


@pytest.mark.postgres
async def test_a_hot_write_whose_connection_dies_under_it_is_an_outage_in_flight_and_its_slot_serves_again(
    postgres_url: str,
) -> None:
    """An execution's start (like its create and end) runs on the pool's asyncpg connection
    straight (`SQLEngine._lean_run`): killed mid-statement, it fails as a connection lost in
    flight (what the callers' retry rule reads), the dead connection is given up, and the
    pool's only slot serves the next call on a new one."""
    store = SQLStateStore(postgres_url, pool_size=1, max_overflow=0)
    await store.start()
    database = postgres_url.rsplit("/", 1)[1]
    locker = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await store.create_execution(Execution(execution_id="held", agent="a", trace_id="t"))
        lock = locker.transaction()
        await lock.start()
        await locker.execute("SELECT 1 FROM executions WHERE execution_id = 'held' FOR UPDATE")
        start = asyncio.create_task(store.start_execution("held", worker="w", provider="p", model="m"))
        killed, deadline = 0, asyncio.get_running_loop().time() + 30
        while not killed and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
            killed = await admin.fetchval(  # the start, waiting for the row's lock
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND wait_event_type = 'Lock'",
                database,
            )
        with pytest.raises(DependencyUnavailableError) as lost:
            await start
        await lock.rollback()
        started = await store.start_execution("held", worker="w", provider="p", model="m")
    finally:
        await locker.close()
        await admin.close()
        await store.close()

    assert killed == 1
    assert in_flight(lost.value)
    assert started.attempts == 1  # the killed statement changed nothing


@pytest.mark.postgres
async def test_a_connection_refused_to_the_lean_path_is_raised_as_sqlalchemys_connect_raises_it(
    postgres_url: str,
) -> None:
    """The hot statements take the pool's own connection (`engine._pooled`), which SQLAlchemy
    lets a driver error out of bare: a restart's "the database system is shutting down" was
    a 500, not an outage, until it was wrapped as `engine.connect()` wraps it (what
    `errors.as_outage` reads). Here the refusal is a database that does not exist."""
    refused = create_async_engine(postgres_url.rsplit("/", 1)[0] + "/no_such_database_here")
    try:
        with pytest.raises(DBAPIError) as lean:
            await engine._pooled(refused)
        with pytest.raises(DBAPIError) as connect:
            async with refused.connect():
                pass
    finally:
        await refused.dispose()

    assert type(lean.value) is type(connect.value)
    assert str(lean.value.orig) == str(connect.value.orig)
