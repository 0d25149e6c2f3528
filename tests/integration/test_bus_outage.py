"""The RabbitMQ bus through a dropped connection and a broker restart: every publish that
returned is consumed, and the handler's idempotent record holds each event exactly once."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from uuid import uuid4

import pytest

from agentrunner.adapters.bus.rabbitmq import RabbitMQEventBus
from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.domain.event import Event
from tests.contract.conftest import RABBITMQ_URL, delete_broker_objects
from tests.integration.conftest import node_on

pytestmark = [
    pytest.mark.rabbitmq,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl to drop connections"),
]

TOTAL = 300


async def rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, f"rabbitmqctl {' '.join(args)}: {stderr.decode()}"


async def test_every_confirmed_event_is_handled_once_through_a_dropped_connection_and_a_broker_restart() -> None:
    bus = RabbitMQEventBus(RABBITMQ_URL, prefix=f"test-{uuid4().hex[:12]}", retry_delays=(0.05, 0.1, 0.2, 0.4))
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
                await rabbitmqctl("close_all_connections", "test: dropped connection")
            if index == 2 * TOTAL // 3:
                await rabbitmqctl("stop_app")
                await rabbitmqctl("start_app")
                await rabbitmqctl("await_startup")
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
        await delete_broker_objects(bus)

    assert len(confirmed) >= TOTAL * 0.9, f"{len(refused)} publishes refused"
    assert set(confirmed) <= record
    assert record <= set(confirmed) | set(refused)
    # Redeliveries (a handler cut off by the drop) are allowed; the record absorbs them.
    assert sum(deliveries.values()) >= len(record)


ECHO = "name: echo\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"


async def test_an_invocation_is_accepted_while_the_broker_holds_publishes_and_runs_after(tmp_path: Path) -> None:
    """Accepted means recorded with its outbox event: the caller is answered without
    waiting for the broker's confirm (here: a memory alarm blocking every publisher), and
    the run happens once the broker takes the event."""
    async with node_on("rabbitmq", tmp_path, {"echo.yml": ECHO}) as node:
        await rabbitmqctl("set_vm_memory_high_watermark", "0")  # the broker blocks publishers
        try:
            began = time.monotonic()
            accepted = await asyncio.wait_for(node.orchestrator.invoke("echo", {"prompt": "held"}, wait=0), 10)
            took = time.monotonic() - began
            await asyncio.sleep(0.5)
            held = await node.orchestrator.execution(accepted.execution_id)
        finally:
            await rabbitmqctl("set_vm_memory_high_watermark", "0.4")  # the default
        finished = await node.orchestrator.wait_for(accepted.execution_id, 30)

    assert took < 2, took
    assert held.status.value == "queued"  # nothing reached the worker while the broker held it
    assert (finished.status.value, finished.output) == ("succeeded", "held")
