"""A pool with many agents on RabbitMQ (issue 23, point 3): it consumes every agent's queue
on a bounded number of channels (a channel per agent capped a pool at the broker's
`channel_max`, 2,047 by default), an invocation published the moment the pool's start-up
returned reaches its agent, and each agent's prefetch still bounds its own work although
its consumer shares a channel with other agents'."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import uuid4

import aio_pika
import pytest

from agentrunner.adapters.bus.rabbitmq import RabbitMQEventBus
from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.event import Event
from agentrunner.runtime.agent_queues import AgentQueues
from agentrunner.runtime.topics import agent_queue, invoke_topic
from tests.contract.conftest import RABBITMQ_URL

pytestmark = pytest.mark.rabbitmq

AGENTS = 300


def _config(name: str) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "name": name,
            "agent_type": "t",
            "execution_mode": "autonomous",
            "llm_config": {"provider": "echo", "model": "echo"},
        }
    )


@pytest.fixture
async def bus() -> AsyncIterator[RabbitMQEventBus]:
    started = RabbitMQEventBus(RABBITMQ_URL, prefix=f"test-{uuid4().hex[:12]}", retry_delays=(0.05,))
    await started.start()
    yield started
    await started.close(grace_seconds=0)
    await _delete_broker_objects(started)


async def _delete_broker_objects(bus: RabbitMQEventBus) -> None:
    """Remove what the bus declared: 1,500 queues, each delete unanswered but the last."""
    exchange, queues = bus.declared
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue, nowait=True)
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()


async def test_a_pool_consumes_every_agents_queue_on_few_channels_and_loses_nothing_published_at_once(
    bus: RabbitMQEventBus,
) -> None:
    seen: dict[str, int] = {}
    everyone = asyncio.Event()

    async def handle(agent: str, event: Event) -> None:
        assert event.topic == invoke_topic(agent)
        seen[agent] = seen.get(agent, 0) + 1
        if len(seen) == AGENTS:
            everyone.set()

    names = [f"agent-{i}" for i in range(AGENTS)]
    queues = AgentQueues(bus=bus, handler=handle, prefetch=4)
    await queues.sync([_config(name) for name in names])
    # Published the moment start-up returned: every consumer is already in place.
    await asyncio.gather(*(bus.publish(Event(topic=invoke_topic(name), payload={}, trace_id="t")) for name in names))

    async with asyncio.timeout(60):
        await everyone.wait()
    assert len(queues) == AGENTS
    assert set(seen) == set(names)
    # A channel per agent would be 300 and more: 3 full shared channels and the rest.
    assert bus.open_channels <= 20, bus.open_channels
    await queues.stop(grace_seconds=1)
    assert sorted(seen.values()) == [1] * AGENTS  # nothing handled twice either


async def test_each_agents_prefetch_bounds_its_own_work_on_a_shared_channel(bus: RabbitMQEventBus) -> None:
    """20 agents on a pool's 8 spread channels: the blocked agent shares its channel with
    others, holds no more than its prefetch, and starves none of them."""
    others = [f"other-{i}" for i in range(19)]
    in_flight = 0
    most = 0
    handled: set[str] = set()
    all_handled = asyncio.Event()
    release = asyncio.Event()

    async def handle(agent: str, event: Event) -> None:
        nonlocal in_flight, most
        if agent != "busy":
            handled.add(agent)
            if len(handled) == len(others):
                all_handled.set()
            return
        in_flight += 1
        most = max(most, in_flight)
        try:
            await release.wait()
        finally:
            in_flight -= 1

    queues = AgentQueues(bus=bus, handler=handle, prefetch=2)
    await queues.sync([_config(name) for name in ["busy", *others]])
    for _ in range(5):
        await bus.publish(Event(topic=invoke_topic("busy"), payload={}, trace_id="t"))
    await asyncio.gather(*(bus.publish(Event(topic=invoke_topic(name), payload={}, trace_id="t")) for name in others))

    async with asyncio.timeout(20):
        await all_handled.wait()  # none starved by the busy agent's backlog
        # Two in hand, three left waiting in the queue: the prefetch held.
        while in_flight < 2 or (await bus.queue_depths([agent_queue("busy")]))[agent_queue("busy")] != 3:
            await asyncio.sleep(0.02)
    assert most == 2
    release.set()
    await queues.stop(grace_seconds=5)


async def test_a_message_cut_short_goes_back_to_its_queue_while_its_shared_channel_stays_open(
    bus: RabbitMQEventBus,
) -> None:
    """16 agents, two on each spread channel: cutting one agent's consumer (the watchdog's
    restart) leaves the channel open for its neighbour, and the message it had in hand is
    delivered again to its next consumer."""
    deliveries: list[int] = []
    first_in_hand = asyncio.Event()
    again = asyncio.Event()

    async def handle(agent: str, event: Event) -> None:
        if agent != "stuck":
            return
        deliveries.append(event.attempt)
        if len(deliveries) == 1:
            first_in_hand.set()
            await asyncio.Event().wait()  # hung until cut short
        again.set()

    queues = AgentQueues(bus=bus, handler=handle, prefetch=1)
    await queues.sync([_config(name) for name in ["stuck", *(f"other-{i}" for i in range(15))]])
    channels = bus.open_channels
    await bus.publish(Event(topic=invoke_topic("stuck"), payload={}, trace_id="t"))
    async with asyncio.timeout(20):
        await first_in_hand.wait()
    patterns = await queues.cut("stuck")
    assert patterns is not None
    assert bus.open_channels == channels  # its neighbour still consumes there
    await queues.consume("stuck", patterns)
    async with asyncio.timeout(20):
        await again.wait()
    assert deliveries == [1, 1]  # the same delivery again, not a retry
    await queues.stop(grace_seconds=1)


async def _queue_exists(name: str) -> bool:
    """A passive declare: the broker answers for an existing queue and closes the channel
    (404, NOT_FOUND) for one it does not know."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
        return True
    finally:
        await connection.close()


async def test_an_agents_retry_queue_is_declared_at_its_first_retry_and_the_retry_arrives(
    bus: RabbitMQEventBus,
) -> None:
    """Four retry queues per agent were declared at start-up, most of the broker's work with
    1,000 agents; now a durable queue gets its retry queue when a handler first fails."""
    attempts: list[int] = []
    retried = asyncio.Event()

    async def handle(agent: str, event: Event) -> None:
        attempts.append(event.attempt)
        if event.attempt == 1:
            raise RuntimeError("the first attempt fails")
        retried.set()

    queues = AgentQueues(bus=bus, handler=handle, prefetch=1)
    await queues.sync([_config("flaky")])
    prefix = bus.declared[0].removesuffix(".events")
    retry = f"{prefix}.q.{agent_queue('flaky')}.retry.50"
    assert not await _queue_exists(retry)

    await bus.publish(Event(topic=invoke_topic("flaky"), payload={}, trace_id="t"))
    async with asyncio.timeout(30):
        await retried.wait()
    assert attempts == [1, 2]
    assert await _queue_exists(retry)
    assert retry in bus.declared[1]  # deleted with the rest by the fixture
    await queues.stop(grace_seconds=1)
