"""The transactional outbox: an accepted execution whose event never reached the bus (a
crash between the database and the broker) is published by the sweep, and runs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
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


class CountedMarks(SQLStateStore):
    """The real SQL store, counting its mark statements."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.marks: list[list[str]] = []

    async def mark_published(self, entry_ids: Sequence[str]) -> None:
        self.marks.append(list(entry_ids))
        await super().mark_published(entry_ids)


async def test_a_workers_relay_marks_in_batches_in_the_background_and_runs_no_sweep(sqlite_url: str) -> None:
    """A worker (`start_marking`) publishes what it committed itself: the deliveries of
    several finishes are marked by one statement, not one each before their message is
    acknowledged; the events left behind are the sweeping nodes' (none is published here)."""
    store = CountedMarks(sqlite_url)
    bus = InMemoryEventBus()
    await store.start()
    await bus.start()
    relay = OutboxRelay(bus=bus, store=store, interval_seconds=0.01, grace_seconds=0.0, mark_every_seconds=0.2)
    left = Event(topic="watch.left", trace_id="t-4")
    ours = [Event(topic="watch.ours", trace_id="t-4") for _ in range(3)]
    await store.create_execution(Execution(execution_id="left", agent="a", trace_id="t-4"), events=[left])
    for i, event in enumerate(ours):
        await store.create_execution(Execution(execution_id=f"e{i}", agent="a", trace_id="t-4"), events=[event])
    await relay.start_marking()
    try:
        for event in ours:
            await relay.deliver([event])

        async def only_left_pending() -> list[str]:
            while len(pending := [entry.event.event_id for entry in await store.pending_events()]) > 1:
                await asyncio.sleep(0.02)
            return pending

        pending = await asyncio.wait_for(only_left_pending(), 10)
    finally:
        await relay.stop()
        await bus.close()
        await store.close()

    assert pending == [left.event_id]
    assert store.marks == [[event.event_id for event in ours]]


def test_a_worker_node_starts_the_writer_of_marks_and_no_sweep(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, rabbitmq_url="amqp://guest:guest@127.0.0.1:5672/")
    for roles in (["autonomous"], ["continuous"], ["collaborative"], ["autonomous", "continuous"]):
        names = [component.name for component in Node(settings, roles=roles).lifecycle.components]
        assert ("relay-marks" in names, "relay" in names) == (True, False), roles
    names = [component.name for component in Node(settings, roles=["orchestrator", "autonomous"]).lifecycle.components]
    assert ("relay-marks" in names, "relay" in names) == (False, True)
