"""EventBus contract: routing, fan-out, competing consumers, retries, dead letters, prefetch,
tracing, graceful close and exclusive queues, the same on every backend."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.domain.event import DeadLetter, Event
from agentrunner.ports.bus import EventBus
from agentrunner.tracing import current_trace_id
from tests.contract.conftest import DEAD_LETTERS, MAX_ATTEMPTS, RETRY_DELAYS
from tests.topic_reference import PATTERNS, TOPICS, reference_matches

WAIT_SECONDS = 5.0
# A topic every recording queue is also bound to: a queue with one consumer handles its
# events in order, so once the barrier arrived every event published before it has too.
BARRIER = "contract.barrier"


def _event(topic: str, **fields: Any) -> Event:
    return Event.model_validate({"topic": topic, "trace_id": "trace-contract", **fields})


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    """Wait (bounded) until `condition()` holds."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def dead_letters(bus: EventBus) -> list[DeadLetter]:
    """The events `bus` gave up on, as its dead-letter consumer received them."""
    return list(DEAD_LETTERS[id(bus)])


class Recorder:
    """A handler that records what it is given, optionally after a pause."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.events.append(event)

    @property
    def topics(self) -> list[str]:
        """Topics received, barriers left out."""
        return [event.topic for event in self.events if event.topic != BARRIER]

    @property
    def barriers(self) -> int:
        return sum(1 for event in self.events if event.topic == BARRIER)


async def subscribe_recorder(
    bus: EventBus, queue: str, patterns: Sequence[str], *, exclusive: bool = False
) -> Recorder:
    recorder = Recorder()
    await bus.subscribe(queue, [*patterns, BARRIER], recorder, exclusive=exclusive)
    return recorder


async def drain(bus: EventBus, *recorders: Recorder) -> None:
    """Publish a barrier and wait until every recorder has handled it."""
    expected = [recorder.barriers + 1 for recorder in recorders]
    await bus.publish(_event(BARRIER))
    await wait_until(
        lambda: all(r.barriers >= n for r, n in zip(recorders, expected, strict=True)), "the barrier to arrive"
    )


# -- routing --------------------------------------------------------------------------------


async def test_wildcard_patterns_route_each_topic_to_exactly_the_matching_queues(event_bus: EventBus) -> None:
    queues = {
        "one-word": await subscribe_recorder(event_bus, "q.one-word", ["orders.*"]),
        "any-words": await subscribe_recorder(event_bus, "q.any-words", ["orders.#"]),
        "middle": await subscribe_recorder(event_bus, "q.middle", ["*.created.#"]),
        "exact": await subscribe_recorder(event_bus, "q.exact", ["orders.created"]),
        "everything": await subscribe_recorder(event_bus, "q.everything", ["#"]),
    }
    topics = ["orders", "orders.created", "orders.created.eu", "users.created", "orders.deleted"]

    for topic in topics:
        await event_bus.publish(_event(topic))
    await drain(event_bus, *queues.values())

    assert queues["one-word"].topics == ["orders.created", "orders.deleted"]
    assert queues["any-words"].topics == ["orders", "orders.created", "orders.created.eu", "orders.deleted"]
    assert queues["middle"].topics == ["orders.created", "orders.created.eu", "users.created"]
    assert queues["exact"].topics == ["orders.created"]
    assert queues["everything"].topics == topics


@pytest.mark.parametrize(
    ("pattern", "topic", "delivered"),
    [
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("*", "a", True),
        ("*", "a.b", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#", "a.b.c", True),
        ("#.c", "c", True),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
        ("*.b.*", "a.b.c", True),
        ("*.b.*", "b.c", False),
        ("a.b", "a.bc", False),
        ("a.b", "A.B", False),
    ],
)
async def test_star_matches_one_word_and_hash_matches_zero_or_more(
    event_bus: EventBus, pattern: str, topic: str, delivered: bool
) -> None:
    recorder = await subscribe_recorder(event_bus, "q.match", [pattern])

    await event_bus.publish(_event(topic))
    await drain(event_bus, recorder)

    assert recorder.topics == ([topic] if delivered else [])


async def test_event_matching_no_queue_is_dropped_without_error(event_bus: EventBus) -> None:
    bystander = await subscribe_recorder(event_bus, "q.bystander", ["orders.#"])

    await event_bus.publish(_event("nobody.listens"))
    late = await subscribe_recorder(event_bus, "q.late", ["nobody.#"])
    await drain(event_bus, bystander, late)

    assert bystander.topics == []
    assert late.topics == [], "an unroutable event must not wait for a queue declared later"


async def test_every_queue_bound_to_a_pattern_gets_its_own_copy(event_bus: EventBus) -> None:
    billing = await subscribe_recorder(event_bus, "q.billing", ["orders.#"])
    shipping = await subscribe_recorder(event_bus, "q.shipping", ["orders.#"])
    published = _event("orders.created", payload={"order": 7})

    await event_bus.publish(published)
    await drain(event_bus, billing, shipping)

    assert [e.event_id for e in billing.events if e.topic != BARRIER] == [published.event_id]
    assert [e.event_id for e in shipping.events if e.topic != BARRIER] == [published.event_id]


async def test_queue_with_several_matching_patterns_gets_one_copy(event_bus: EventBus) -> None:
    recorder = await subscribe_recorder(event_bus, "q.overlap", ["orders.*", "orders.#", "#.created"])

    await event_bus.publish(_event("orders.created"))
    await drain(event_bus, recorder)

    assert recorder.topics == ["orders.created"]


async def test_event_arrives_with_every_field_it_was_published_with(event_bus: EventBus) -> None:
    recorder = await subscribe_recorder(event_bus, "q.fields", ["orders.#"])
    published = _event(
        "orders.created",
        payload={"order": 7, "items": [{"sku": "a-1", "qty": 2}], "note": "ünïcode", "gift": None},
        headers={"source": "contract-test"},
        trace_id="trace-fields-1",
    )

    await event_bus.publish(published)
    await drain(event_bus, recorder)

    received = [e for e in recorder.events if e.topic != BARRIER]
    assert received == [published]


# -- consumers ------------------------------------------------------------------------------


async def test_consumers_of_one_queue_share_its_events_without_duplicates(event_bus: EventBus) -> None:
    first, second = Recorder(delay=0.005), Recorder(delay=0.005)
    await event_bus.subscribe("q.work", ["jobs.#"], first)
    await event_bus.subscribe("q.work", ["jobs.#"], second)
    published = [_event("jobs.run", payload={"n": n}) for n in range(20)]

    for event in published:
        await event_bus.publish(event)
    await wait_until(lambda: len(first.events) + len(second.events) >= 20, "20 events handled")
    await asyncio.sleep(0.05)  # room for a duplicate to show up

    handled = [e.event_id for e in first.events + second.events]
    assert sorted(handled) == sorted(e.event_id for e in published)
    assert first.events, "the first consumer got no event"
    assert second.events, "the second consumer got no event"


async def test_prefetch_one_handles_events_in_publish_order_one_at_a_time(event_bus: EventBus) -> None:
    order: list[int] = []
    in_flight = 0
    most_in_flight = 0

    async def handler(event: Event) -> None:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await asyncio.sleep(0.01)
        order.append(event.payload["n"])
        in_flight -= 1

    await event_bus.subscribe("q.serial", ["jobs.#"], handler, prefetch=1)
    for n in range(10):
        await event_bus.publish(_event("jobs.run", payload={"n": n}))
    await wait_until(lambda: len(order) >= 10, "10 events handled")

    assert order == list(range(10))
    assert most_in_flight == 1


async def test_prefetch_bounds_the_handlers_in_flight(event_bus: EventBus) -> None:
    done = 0
    in_flight = 0
    most_in_flight = 0

    async def handler(_: Event) -> None:
        nonlocal done, in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        done += 1

    await event_bus.subscribe("q.parallel", ["jobs.#"], handler, prefetch=3)
    for n in range(9):
        await event_bus.publish(_event("jobs.run", payload={"n": n}))
    await wait_until(lambda: done >= 9, "9 events handled")

    assert 1 < most_in_flight <= 3


async def test_handler_sees_the_event_trace_id_as_the_current_trace(event_bus: EventBus) -> None:
    seen: list[str | None] = []

    async def handler(_: Event) -> None:
        seen.append(current_trace_id())

    await event_bus.subscribe("q.trace", ["traced.#"], handler)
    await event_bus.publish(_event("traced.one", trace_id="trace-abc-1"))
    await event_bus.publish(_event("traced.two", trace_id="trace-abc-2"))
    await wait_until(lambda: len(seen) >= 2, "2 events handled")

    assert seen == ["trace-abc-1", "trace-abc-2"]
    assert current_trace_id() is None, "the consumer's trace leaked into the publisher"


# -- retries and dead letters ---------------------------------------------------------------


async def test_failed_handler_gets_the_event_again_with_attempt_incremented(event_bus: EventBus) -> None:
    deliveries: list[tuple[str, int, str | None]] = []

    async def flaky(event: Event) -> None:
        deliveries.append((event.event_id, event.attempt, current_trace_id()))
        if event.attempt < 3:
            raise RuntimeError(f"transient failure on attempt {event.attempt}")

    await event_bus.subscribe("q.flaky", ["jobs.#"], flaky)
    published = _event("jobs.run", payload={"n": 1}, trace_id="trace-retry")

    await event_bus.publish(published)
    await wait_until(lambda: len(deliveries) >= 3, "the third attempt")
    await asyncio.sleep(sum(RETRY_DELAYS) + 0.1)  # room for a delivery too many

    assert deliveries == [(published.event_id, attempt, "trace-retry") for attempt in (1, 2, 3)]
    assert dead_letters(event_bus) == []


async def test_redeliveries_follow_the_backoff_schedule(event_bus: EventBus) -> None:
    times: list[float] = []

    async def failing(_: Event) -> None:
        times.append(time.monotonic())
        raise RuntimeError("always")

    await event_bus.subscribe("q.backoff", ["jobs.#"], failing)
    await event_bus.publish(_event("jobs.run"))
    await wait_until(lambda: len(dead_letters(event_bus)) == 1, "the event to be dead-lettered")

    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) == len(RETRY_DELAYS)
    for gap, delay in zip(gaps, RETRY_DELAYS, strict=True):
        assert gap >= delay * 0.9, (gaps, RETRY_DELAYS)  # never sooner than the schedule
        assert gap < delay + 1.0, (gaps, RETRY_DELAYS)


async def test_event_failing_every_attempt_is_dead_lettered_with_the_last_error(event_bus: EventBus) -> None:
    attempts: list[int] = []

    async def broken(event: Event) -> None:
        attempts.append(event.attempt)
        raise RuntimeError(f"boom on attempt {event.attempt}")

    await event_bus.subscribe("q.broken", ["jobs.#"], broken)
    published = _event("jobs.run", payload={"n": 1})

    await event_bus.publish(published)
    await wait_until(lambda: len(dead_letters(event_bus)) >= 1, "the event to be dead-lettered")
    await asyncio.sleep(sum(RETRY_DELAYS) + 0.1)  # room for a delivery after giving up

    assert attempts == list(range(1, MAX_ATTEMPTS + 1))
    [letter] = dead_letters(event_bus)
    assert letter.queue == "q.broken"
    assert letter.event.event_id == published.event_id
    assert letter.event.payload == published.payload
    assert letter.event.attempt == MAX_ATTEMPTS
    assert f"boom on attempt {MAX_ATTEMPTS}" in letter.error


async def test_retry_redelivers_only_to_the_queue_whose_handler_failed(event_bus: EventBus) -> None:
    healthy = Recorder()
    failing_attempts: list[int] = []

    async def failing(event: Event) -> None:
        failing_attempts.append(event.attempt)
        raise RuntimeError("always")

    await event_bus.subscribe("q.healthy", ["orders.#"], healthy)
    await event_bus.subscribe("q.failing", ["orders.#"], failing)

    await event_bus.publish(_event("orders.created"))
    await wait_until(lambda: len(dead_letters(event_bus)) >= 1, "the failing copy to be dead-lettered")

    assert [e.attempt for e in healthy.events] == [1]
    assert failing_attempts == list(range(1, MAX_ATTEMPTS + 1))
    assert [letter.queue for letter in dead_letters(event_bus)] == ["q.failing"]


# -- exclusive and durable queues -----------------------------------------------------------


async def test_exclusive_queue_disappears_when_its_subscription_is_cancelled(event_bus: EventBus) -> None:
    first = Recorder()
    subscription = await event_bus.subscribe("q.private", ["news.#", BARRIER], first, exclusive=True)
    await event_bus.publish(_event("news.one"))
    await drain(event_bus, first)

    await subscription.cancel()
    await event_bus.publish(_event("news.while-gone"))
    second = await subscribe_recorder(event_bus, "q.private", ["news.#"], exclusive=True)
    await event_bus.publish(_event("news.two"))
    await drain(event_bus, second)

    assert subscription.queue == "q.private"
    assert first.topics == ["news.one"]
    assert second.topics == ["news.two"]


async def test_shared_queue_keeps_events_published_while_nobody_consumes(event_bus: EventBus) -> None:
    first = Recorder()
    subscription = await event_bus.subscribe("q.shared", ["news.#", BARRIER], first)
    await drain(event_bus, first)

    await subscription.cancel()
    await event_bus.publish(_event("news.while-gone"))
    second = await subscribe_recorder(event_bus, "q.shared", ["news.#"])
    await drain(event_bus, second)

    assert first.topics == []
    assert second.topics == ["news.while-gone"]


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [
        "",
        ".orders",
        "orders.",
        "orders..created",
        "orders created",
        "orders/created",
        "orders.*",
        "orders.#",
        "ordérs",
        pytest.param("orders.created\n", id="trailing-newline"),
    ],
)
async def test_publishing_an_invalid_topic_raises_value_error(event_bus: EventBus, topic: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        await event_bus.publish(_event(topic))


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        ".orders",
        "orders.",
        "orders..#",
        "orders.*x",
        "orders.#x",
        "or ders",
        "orders/#",
        pytest.param("orders.created\n", id="trailing-newline"),
    ],
)
async def test_subscribing_with_an_invalid_pattern_raises_value_error(event_bus: EventBus, pattern: str) -> None:
    with pytest.raises(ValueError, match="pattern"):
        await event_bus.subscribe("q.invalid", ["orders.#", pattern], Recorder())


# -- lifecycle ------------------------------------------------------------------------------


async def test_ping_succeeds_on_a_started_bus(event_bus: EventBus) -> None:
    await event_bus.ping()


async def test_graceful_close_lets_the_handler_in_flight_finish(event_bus: EventBus) -> None:
    started = asyncio.Event()
    finished: list[str] = []

    async def slow(event: Event) -> None:
        started.set()
        await asyncio.sleep(0.2)
        finished.append(event.event_id)

    await event_bus.subscribe("q.slow", ["jobs.#"], slow)
    published = _event("jobs.run")
    await event_bus.publish(published)
    await asyncio.wait_for(started.wait(), WAIT_SECONDS)

    await asyncio.wait_for(event_bus.close(grace_seconds=1.0), WAIT_SECONDS)

    assert finished == [published.event_id]


async def test_closed_bus_refuses_publish_and_subscribe_and_fails_ping(event_bus: EventBus) -> None:
    await asyncio.wait_for(event_bus.close(grace_seconds=1.0), WAIT_SECONDS)

    with pytest.raises(DependencyUnavailableError):
        await event_bus.publish(_event("jobs.run"))
    with pytest.raises(DependencyUnavailableError):
        await event_bus.subscribe("q.after-close", ["jobs.#"], Recorder())
    with pytest.raises(DependencyUnavailableError):
        await event_bus.ping()


async def test_close_returns_once_the_handler_in_flight_finished(event_bus: EventBus) -> None:
    started = asyncio.Event()

    async def slow(_: Event) -> None:
        started.set()
        await asyncio.sleep(0.2)

    await event_bus.subscribe("q.slow", ["jobs.#"], slow)
    await event_bus.publish(_event("jobs.run"))
    await asyncio.wait_for(started.wait(), WAIT_SECONDS)

    began = time.monotonic()
    await asyncio.wait_for(event_bus.close(grace_seconds=2.0), WAIT_SECONDS)

    assert time.monotonic() - began < 1.0, "close waited for the whole grace period"


async def test_close_starts_no_new_handler(event_bus: EventBus) -> None:
    started: list[int] = []

    async def slow(event: Event) -> None:
        started.append(event.payload["n"])
        await asyncio.sleep(0.2)

    await event_bus.subscribe("q.slow", ["jobs.#"], slow, prefetch=1)
    await event_bus.publish(_event("jobs.run", payload={"n": 1}))
    await event_bus.publish(_event("jobs.run", payload={"n": 2}))
    await wait_until(lambda: len(started) >= 1, "the first handler to start")

    await asyncio.wait_for(event_bus.close(grace_seconds=1.0), WAIT_SECONDS)

    assert started == [1], "close took another event after the one in flight"


# -- dead letters and replay ----------------------------------------------------------------


async def test_replay_delivers_a_dead_letter_again_to_its_own_queue_from_attempt_one(event_bus: EventBus) -> None:
    healthy = Recorder()
    await event_bus.subscribe("q.bystander", ["orders.#"], healthy)
    broken = True
    received: list[Event] = []

    async def sometimes(event: Event) -> None:
        if broken:
            raise RuntimeError("not yet")
        received.append(event)

    await event_bus.subscribe("q.flaky", ["orders.#"], sometimes)
    published = _event("orders.created", payload={"id": 7})
    await event_bus.publish(published)
    await wait_until(lambda: len(dead_letters(event_bus)) == 1, "the event to be dead-lettered")
    [letter] = dead_letters(event_bus)
    assert letter.error == "RuntimeError: not yet"

    broken = False
    await event_bus.replay(letter)
    await wait_until(lambda: len(received) == 1, "the replayed event")

    assert received[0].event_id == published.event_id
    assert received[0].attempt == 1
    assert received[0].payload == {"id": 7}
    assert received[0].trace_id == published.trace_id
    assert [e.event_id for e in healthy.events] == [published.event_id], "the bystander queue got no replay"


@settings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(patterns=st.lists(PATTERNS, min_size=1, max_size=4, unique=True), topics=st.lists(TOPICS, max_size=8))
async def test_generated_topics_reach_exactly_the_queues_a_reference_matcher_picks(
    event_bus: EventBus, patterns: list[str], topics: list[str]
) -> None:
    run = uuid4().hex[:8]
    recorders = [await subscribe_recorder(event_bus, f"q.gen.{run}.{index}", [p]) for index, p in enumerate(patterns)]
    for topic in topics:
        await event_bus.publish(_event(topic))
    await drain(event_bus, *recorders)

    for pattern, recorder in zip(patterns, recorders, strict=True):
        expected = [topic for topic in topics if reference_matches(pattern, topic)]
        assert sorted(recorder.topics) == sorted(expected), pattern


async def test_a_declared_queue_keeps_its_events_until_a_consumer_subscribes(event_bus: EventBus) -> None:
    await event_bus.declare("q.early", ["early.#"])
    await event_bus.declare("q.early", ["early.#"])  # idempotent
    await event_bus.publish(_event("early.one"))
    await event_bus.publish(_event("early.two"))

    recorder = await subscribe_recorder(event_bus, "q.early", ["early.#"])
    await drain(event_bus, recorder)

    assert sorted(recorder.topics) == ["early.one", "early.two"]


async def test_patterns_bound_later_reach_the_queue_too(event_bus: EventBus) -> None:
    recorder = await subscribe_recorder(event_bus, "q.bind", ["first.topic"])

    await event_bus.bind("q.bind", ["later.*.x1"])
    await event_bus.publish(_event("later.agent.x1"))
    await event_bus.publish(_event("later.agent.x2"))
    await event_bus.publish(_event("first.topic"))
    await drain(event_bus, recorder)

    assert sorted(recorder.topics) == ["first.topic", "later.agent.x1"]


async def test_binding_a_queue_that_was_never_declared_is_refused(event_bus: EventBus) -> None:
    with pytest.raises(DependencyUnavailableError, match="nowhere"):
        await event_bus.bind("q.nowhere", ["any.topic"])


async def test_unbound_patterns_no_longer_reach_the_queue(event_bus: EventBus) -> None:
    recorder = await subscribe_recorder(event_bus, "q.rebind", ["old.topic", "kept.topic"])

    await event_bus.unbind("q.rebind", ["old.topic"])
    await event_bus.publish(_event("old.topic"))
    await event_bus.publish(_event("kept.topic"))
    await drain(event_bus, recorder)

    assert recorder.topics == ["kept.topic"]


# -- queue depth ------------------------------------------------------------------------------


async def test_queue_depth_counts_the_events_waiting_for_a_consumer(event_bus: EventBus) -> None:
    await event_bus.declare("q.depth", ["depth.#"])
    for number in range(3):
        await event_bus.publish(_event(f"depth.e{number}"))
    await event_bus.publish(_event("elsewhere.topic"))

    async def three_waiting() -> bool:
        return (await event_bus.queue_depths(["q.depth"]))["q.depth"] == 3

    deadline = time.monotonic() + WAIT_SECONDS
    while not await three_waiting():  # the broker counts a confirmed publish a moment later
        assert time.monotonic() < deadline, await event_bus.queue_depths(["q.depth"])
        await asyncio.sleep(0.02)

    assert await event_bus.queue_depths(["q.depth", "q.never-declared"]) == {"q.depth": 3, "q.never-declared": 0}


async def test_queue_depth_drops_to_zero_once_a_consumer_took_the_events(event_bus: EventBus) -> None:
    await event_bus.declare("q.drained", ["drained.#"])
    await event_bus.publish(_event("drained.one"))
    await event_bus.publish(_event("drained.two"))

    recorder = await subscribe_recorder(event_bus, "q.drained", ["drained.#"])
    await drain(event_bus, recorder)

    assert sorted(recorder.topics) == ["drained.one", "drained.two"]
    assert await event_bus.queue_depths(["q.drained"]) == {"q.drained": 0}
