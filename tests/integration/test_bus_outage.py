"""The RabbitMQ bus through a dropped connection and a broker restart: every publish that
returned is consumed, and the handler's idempotent record holds each event exactly once.

The broker is the test's own (tests/integration/private_rabbitmq.py): the shared one is
never dropped, stopped or blocked, so these tests run beside the rest of the suite."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import pytest

from agentrunner.adapters.bus.rabbitmq import RabbitMQEventBus
from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.domain.event import Event
from tests.integration.conftest import node_on
from tests.integration.private_rabbitmq import PrivateRabbitMQ, private_rabbitmq

pytestmark = [
    pytest.mark.rabbitmq,
    pytest.mark.skipif(not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists(), reason="needs rabbitmq-server"),
]

TOTAL = 300


@pytest.fixture
async def rabbitmq() -> AsyncIterator[PrivateRabbitMQ]:
    async with private_rabbitmq() as broker:
        yield broker


async def test_every_confirmed_event_is_handled_once_through_a_dropped_connection_and_a_broker_restart(
    rabbitmq: PrivateRabbitMQ,
) -> None:
    bus = RabbitMQEventBus(rabbitmq.url, prefix=f"test-{uuid4().hex[:12]}", retry_delays=(0.05, 0.1, 0.2, 0.4))
    deliveries: Counter[str] = Counter()
    record: set[str] = set()  # what an idempotent handler stores, keyed by event id

    async def handler(event: Event) -> None:
        deliveries[event.event_id] += 1
        record.add(event.event_id)

    confirmed: list[str] = []
    refused: list[str] = []
    await bus.start()
    try:
        await bus.subscribe("q.outage", ["outage.#"], handler, prefetch=10)
        for index in range(TOTAL):
            if index == TOTAL // 3:
                await rabbitmq.ctl("close_all_connections", "test: dropped connection")
            if index == 2 * TOTAL // 3:
                await rabbitmq.ctl("stop_app")
                await rabbitmq.ctl("start_app")
                await rabbitmq.ctl("await_startup")
            event = Event(topic=f"outage.event.{index}", payload={"n": index}, trace_id="trace-outage")
            try:
                await bus.publish(event)
            except DependencyUnavailableError:
                refused.append(event.event_id)  # failed loudly: the caller knows it was not accepted
            else:
                confirmed.append(event.event_id)

        async def all_handled() -> None:
            while not set(confirmed) <= record:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(all_handled(), 60)
    finally:
        await bus.close(grace_seconds=2)

    assert len(confirmed) >= TOTAL * 0.9, f"{len(refused)} publishes refused"
    assert set(confirmed) <= record
    assert record <= set(confirmed) | set(refused)
    # Redeliveries (a handler cut off by the drop) are allowed; the record absorbs them.
    assert sum(deliveries.values()) >= len(record)


ECHO = "name: echo\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"


async def test_an_invocation_is_accepted_while_the_broker_holds_publishes_and_runs_after(
    tmp_path: Path, rabbitmq: PrivateRabbitMQ
) -> None:
    """Accepted means recorded with its outbox event: the caller is answered without
    waiting for the broker's confirm (here: a memory alarm blocking every publisher), and
    the run happens once the broker takes the event."""
    async with node_on("rabbitmq", tmp_path, {"echo.yml": ECHO}, rabbitmq_url=rabbitmq.url) as node:
        await rabbitmq.ctl("set_vm_memory_high_watermark", "0")  # the broker blocks publishers
        try:
            began = time.monotonic()
            accepted = await asyncio.wait_for(node.orchestrator.invoke("echo", {"prompt": "held"}, wait=0), 10)
            took = time.monotonic() - began
            await asyncio.sleep(0.5)
            held = await node.orchestrator.execution(accepted.execution_id)
        finally:
            await rabbitmq.ctl("set_vm_memory_high_watermark", "0.4")  # the default
        finished = await node.orchestrator.wait_for(accepted.execution_id, 30)

    assert took < 2, took
    assert held.status.value == "queued"  # nothing reached the worker while the broker held it
    assert (finished.status.value, finished.output) == ("succeeded", "held")
