"""A node's start and stop walk its role table through an exit stack: a start that fails
part-way closes what it had opened, and a stop cut short in one component still closes the
others. On real services: the failures are the broker's and a deadline's, not mocks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import aio_pika
import pytest
from pydantic import SecretStr

from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.domain.execution import Execution
from agentrunner.node import Node
from agentrunner.settings import Settings
from tests.contract.conftest import RABBITMQ_URL, delete_broker_objects
from tests.fakes.openai_server import FakeOpenAI

ECHO = "name: echoer\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
SLOW = "name: slow\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"
LLM_SECONDS = 2.0


def _settings(tmp_path: Path, agents: dict[str, str], **more: Any) -> Settings:
    (tmp_path / "agents").mkdir(exist_ok=True)
    for name, text in agents.items():
        (tmp_path / "agents" / name).write_text(text)
    return Settings(_env_file=None, agents_dir=tmp_path / "agents", data_dir=tmp_path, **more)


async def _until(condition: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {seconds} s"
        await asyncio.sleep(0.02)


def _tasks_left(before: set[asyncio.Task[object]]) -> list[str]:
    return sorted(task.get_name() for task in asyncio.all_tasks() - before - {asyncio.current_task()})


async def _closed(node: Node) -> None:
    """The node's store and bus say they are closed."""
    with pytest.raises(DependencyUnavailableError, match=r"not started|closed"):
        await node.store.database.ping()
    with pytest.raises(DependencyUnavailableError):
        await node.bus.ping()


@pytest.mark.rabbitmq
async def test_a_start_that_fails_part_way_closes_what_it_had_opened(tmp_path: Path) -> None:
    """The agent's queue exists on the broker with other properties (declared by someone
    else, not durable): the node's declaration of it fails with PRECONDITION_FAILED, after
    its store, its bus and the orchestrator's engines have started. Nothing stays open."""
    prefix = f"test-{uuid4().hex[:12]}"
    taken = f"{prefix}.q.agent.echoer"
    node = Node(_settings(tmp_path, {"echoer.yml": ECHO}, rabbitmq_url=RABBITMQ_URL, rabbitmq_exchange_prefix=prefix))
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        await channel.declare_queue(taken, durable=False)
        before = asyncio.all_tasks()

        with pytest.raises(Exception, match=r"PRECONDITION_FAILED|inequivalent arg 'durable'"):  # aio-pika's own error
            await node.start()

        await _closed(node)
        await _until(lambda: not _tasks_left(before), "the tasks of the failed start to end")
    finally:
        await node.stop()  # nothing left to stop (a node that did not close what it opened closes it here)
        await delete_broker_objects(node.bus)  # type: ignore[arg-type]
        channel = await connection.channel()
        await channel.queue_delete(taken)
        await connection.close()


async def test_a_stop_cut_short_in_one_component_still_closes_the_others(tmp_path: Path) -> None:
    """A stop given a deadline that runs out while the autonomous pool drains a run in
    flight (its model answers after LLM_SECONDS): the pool's stop is cut short, and the
    components after it (the relay, the orchestrator, the bus, the store, ...) close all the
    same; the run's handler is drained by the bus's close, before the store closes."""
    with FakeOpenAI(api_key="sk-lifecycle", reply="done") as fake:
        fake.slow(LLM_SECONDS)
        settings = _settings(
            tmp_path, {"slow.yml": SLOW}, openai_api_key=SecretStr(fake.api_key), openai_base_url=fake.base_url
        )
        node = Node(settings)
        before = asyncio.all_tasks()
        await node.start()
        await node.orchestrator.invoke("slow", {"prompt": "in flight"})
        await _until(lambda: bool(fake.requests), "the run to call its model")

        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await node.stop()

        await _closed(node)
        await _until(lambda: not _tasks_left(before), "the node's tasks to end")


def _sqlite_threads() -> set[threading.Thread]:
    """The threads of open aiosqlite connections (one each)."""
    return {thread for thread in threading.enumerate() if type(thread).__module__.startswith("aiosqlite")}


async def test_the_store_closes_once_its_operations_in_flight_have_ended(tmp_path: Path) -> None:
    """A store closed while writes are under way (tasks a stop did not wait for) lets them
    end before it closes its connection: no SQLite connection is left open, whose thread
    would answer a loop that is gone by then."""
    before = _sqlite_threads()
    store = SQLStateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await store.start()
    writes = [
        asyncio.create_task(store.create_execution(Execution(execution_id=f"e-{n}", agent="a", trace_id=f"t-{n}")))
        for n in range(2000)
    ]
    # Written in batches of 200, one after the other: once the first is, the second is under way.
    await writes[0]

    await store.close()

    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    # The batch under way was written; those after it were refused: the store was closed.
    assert {type(outcome) for outcome in outcomes} == {type(None), DependencyUnavailableError}
    await _until(lambda: not (_sqlite_threads() - before), "the store's SQLite connection to close", seconds=5)
