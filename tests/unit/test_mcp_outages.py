"""The backoff of unreachable MCP servers: waits that double up to the cap, with jitter
that never makes a wait shorter than the one before, and one outage per endpoint."""

from __future__ import annotations

import random

from agentrunner.adapters.tools.outages import Outages


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_waits_double_up_to_the_cap_and_only_the_first_failure_opens_the_outage() -> None:
    clock = Clock()
    outages = Outages(first_seconds=1, max_seconds=8, clock=clock, rng=random.Random(7))

    opened = [outages.failed("http://kb/mcp", "refused") is not None]
    waits = []
    for _ in range(6):
        wait = outages.seconds_to_next()
        assert wait is not None
        waits.append(wait)
        clock.now += wait
        assert outages.due() == ["http://kb/mcp"]
        opened.append(outages.failed("http://kb/mcp", "refused") is not None)

    assert opened == [True, False, False, False, False, False, False]
    steps = [1, 2, 4, 8, 8, 8]
    assert all(0.75 * step <= wait <= step for wait, step in zip(waits, steps, strict=True))
    assert waits[:4] == sorted(waits[:4])
    ended = outages.answered("http://kb/mcp")
    assert ended is not None
    assert ended.tries == 7
    assert outages.seconds_to_next() is None


def test_a_cap_shorter_than_a_second_is_the_first_wait_too() -> None:
    clock = Clock()
    outages = Outages(first_seconds=1, max_seconds=0.2, clock=clock)

    outages.failed("a", "refused")

    wait = outages.seconds_to_next()
    assert wait is not None
    assert 0.15 <= wait <= 0.2


def test_outages_of_endpoints_no_agent_uses_are_forgotten() -> None:
    outages = Outages(first_seconds=1, max_seconds=10, clock=Clock())
    outages.failed("a", "refused")
    outages.failed("b", "refused")

    outages.keep_only(["b"])

    assert outages.of("a") is None
    assert outages.of("b") is not None
