"""The transactional outbox: an accepted execution whose event never reached the bus (a
crash between the database and the broker) is published by the sweep, and runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from structlog.testing import capture_logs

from agentrunner.adapters.bus.memory import InMemoryEventBus
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.node import Node
from agentrunner.runtime.outbox import OutboxRelay
from agentrunner.settings import Settings

AGENT = "name: echoer\nagent_type: demo\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"


async def test_an_execution_whose_event_was_never_published_runs_after_the_sweep(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "echoer.yml").write_text(AGENT)
    node = Node(Settings(_env_file=None, agents_dir=tmp_path / "agents", data_dir=tmp_path))
    async with node.running():
        execution = Execution(execution_id="crashed", agent="echoer", input={"prompt": "still here"}, trace_id="t-1")
        invocation = Event(topic="invoke.echoer", payload={"execution_id": "crashed"}, trace_id="t-1")
        # What a crash right after the commit leaves: the record and its unpublished event.
        await node.store.executions.create_execution(execution, events=[invocation])
        assert [entry.event.event_id for entry in await node.store.outbox.pending_events()] == [invocation.event_id]

        swept = await node.relay.sweep(older_than_seconds=0)

        async def finished() -> Execution:
            while not (current := await node.store.executions.get_execution("crashed")).status.is_terminal:
                await asyncio.sleep(0.02)
            return current

        result = await asyncio.wait_for(finished(), 10)
        await node.relay.flush()
        pending_after = await node.store.outbox.pending_events()

    assert swept == 1
    assert (result.status, result.output) == (ExecutionStatus.SUCCEEDED, "still here")
    assert pending_after == []


async def test_a_publish_that_fails_is_left_for_the_sweep(sqlite_url: str) -> None:
    store = SQLStateStore(sqlite_url)
    bus = InMemoryEventBus()
    await store.start()
    await bus.start()
    received: list[Event] = []

    async def record(event: Event) -> None:
        received.append(event)

    await bus.subscribe("q.watch", ["watch.#"], record)
    relay = OutboxRelay(bus=bus, store=store)
    event = Event(topic="watch.it", trace_id="t-2")
    await store.create_execution(Execution(execution_id="e", agent="a", trace_id="t-2"), events=[event])
    try:
        await bus.close()
        await relay.deliver([event])  # the bus is down: logged, not raised, not marked
        still_pending = await store.pending_events()
        await bus.start()
        await bus.subscribe("q.watch", ["watch.#"], record)
        swept = await relay.sweep(older_than_seconds=0)
        await asyncio.sleep(0.05)
    finally:
        await bus.close()
        await store.close()

    assert [entry.event.event_id for entry in still_pending] == [event.event_id]
    assert swept == 1
    assert [e.event_id for e in received] == [event.event_id]


async def test_an_outage_of_the_bus_is_logged_once_at_its_start_and_once_at_its_end(sqlite_url: str) -> None:
    store = SQLStateStore(sqlite_url)
    bus = InMemoryEventBus()
    await store.start()
    await bus.start()
    relay = OutboxRelay(bus=bus, store=store)
    events = [Event(topic=f"watch.{n}", trace_id="t-3") for n in range(3)]
    await store.create_execution(Execution(execution_id="e", agent="a", trace_id="t-3"), events=events)
    try:
        await bus.close()
        with capture_logs() as during:
            await relay.deliver(events)
            for _ in range(3):  # the sweep's passes while the bus is away
                await relay.sweep(older_than_seconds=0)
        await bus.start()
        with capture_logs() as after:
            swept = await relay.sweep(older_than_seconds=0)
            await relay.sweep(older_than_seconds=0)
    finally:
        await bus.close()
        await store.close()

    warnings = [entry for entry in during if entry["log_level"] == "warning"]
    assert [entry["event"] for entry in warnings] == [
        "outbox publishing deferred to the sweep until the event bus answers"
    ]
    assert warnings[0]["count"] == 3
    assert swept == 3
    assert [entry["event"] for entry in after] == ["outbox publishing again"]
    assert after[0]["outage_seconds"] >= 0
