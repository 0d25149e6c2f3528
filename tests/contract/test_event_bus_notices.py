"""EventBus contract, notices (`notify`): routed as events are, in the order sent, never
raised for an outage (dropped), on every backend; on RabbitMQ transient and not mandatory."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import aio_pika
import pytest

from agentrunner.adapters.bus.rabbitmq import RabbitMQEventBus
from agentrunner.domain.event import Event
from agentrunner.ports.bus import EventBus
from tests.contract.conftest import RABBITMQ_URL, delete_broker_objects
from tests.contract.test_event_bus import WAIT_SECONDS, _event, drain, subscribe_recorder, wait_until


async def test_notices_reach_every_matching_queue_in_the_order_sent(event_bus: EventBus) -> None:
    watcher = await subscribe_recorder(event_bus, "q.watcher", ["execution.progress.#"])
    other = await subscribe_recorder(event_bus, "q.other", ["orders.#"])
    sent = [_event("execution.progress.writer.e1", payload={"n": n}) for n in range(30)]

    for notice in sent:
        await event_bus.notify(notice)
    await wait_until(lambda: len(watcher.topics) == len(sent), "every notice to arrive")
    await drain(event_bus, other)

    assert [event.event_id for event in watcher.events if event.topic != "contract.barrier"] == [
        notice.event_id for notice in sent
    ]
    assert other.topics == []


async def test_notice_matching_no_queue_is_dropped_without_error(event_bus: EventBus) -> None:
    await event_bus.notify(_event("nobody.listens"))  # returns: nothing to wait for, nothing raised
    late = await subscribe_recorder(event_bus, "q.late", ["nobody.#"])
    await drain(event_bus, late)

    assert late.topics == []


async def test_notice_on_a_closed_bus_is_dropped_not_raised(event_bus: EventBus) -> None:
    await asyncio.wait_for(event_bus.close(grace_seconds=1.0), WAIT_SECONDS)

    await asyncio.wait_for(event_bus.notify(_event("execution.progress.writer.e1")), WAIT_SECONDS)


@pytest.mark.parametrize("topic", ["", "orders..created", "orders.#", "orders created"])
async def test_notice_with_an_invalid_topic_raises_value_error(event_bus: EventBus, topic: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        await event_bus.notify(_event(topic))


@pytest.mark.rabbitmq
async def test_rabbitmq_notices_are_transient_and_events_persistent() -> None:
    """What the broker is asked to keep: an event survives a broker restart (persistent,
    confirmed), a notice does not need to (transient, on a channel without confirms)."""
    bus = RabbitMQEventBus(RABBITMQ_URL, prefix=f"test-{uuid4().hex[:12]}")
    await bus.start()
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        exchange_name, _ = bus.declared
        exchange = await channel.get_exchange(exchange_name)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="execution.progress.#")

        await bus.publish(_event("execution.progress.writer.e1", payload={"kind": "event"}))
        await bus.notify(_event("execution.progress.writer.e1", payload={"kind": "notice"}))

        modes: dict[str, aio_pika.DeliveryMode | None] = {}
        async with queue.iterator(timeout=WAIT_SECONDS) as messages:
            async for message in messages:
                await message.ack()
                modes[Event.model_validate_json(message.body).payload["kind"]] = message.delivery_mode
                if len(modes) == 2:
                    break
        assert modes == {"event": aio_pika.DeliveryMode.PERSISTENT, "notice": aio_pika.DeliveryMode.NOT_PERSISTENT}
    finally:
        await connection.close()
        await bus.close(grace_seconds=0)
        await delete_broker_objects(bus)
