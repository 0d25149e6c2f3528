"""The consumer watchdog on a fake clock: silent consumers are reported within the
heartbeat timeout, strikes count in a row, and an attempt that ends resets them."""

from __future__ import annotations

import asyncio

import pytest

from agentrunner.runtime.watchdog import ConsumerWatchdog


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Reports:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    async def __call__(self, agent: str, execution_id: str, strikes: int) -> None:
        self.calls.append((agent, execution_id, strikes))


async def test_an_attempt_within_its_timeout_is_never_reported(clock: FakeClock) -> None:
    reports = Reports()
    watchdog = ConsumerWatchdog(reports, timeout_seconds=60, clock=clock)

    with watchdog.attempt("chat", "e-1", timeout_seconds=300):
        for _ in range(30):
            clock.now += 10
            await watchdog.check()

    assert reports.calls == []


async def test_an_attempt_past_its_timeout_is_reported_within_the_heartbeat_timeout(clock: FakeClock) -> None:
    reports = Reports()
    watchdog = ConsumerWatchdog(reports, timeout_seconds=60, clock=clock)
    reported_after: list[float] = []

    with watchdog.attempt("chat", "e-1", timeout_seconds=5):
        clock.now += 5  # the attempt's own timeout: from here on, no heartbeat
        for _ in range(70):
            clock.now += 1
            await watchdog.check()
            if reports.calls and not reported_after:
                reported_after.append(clock.now - 1005)

    assert reports.calls == [("chat", "e-1", 1)]
    assert 50 <= reported_after[0] <= 60


async def test_a_consumer_that_stays_stuck_is_reported_again_each_timeout_with_more_strikes(clock: FakeClock) -> None:
    reports = Reports()
    watchdog = ConsumerWatchdog(reports, timeout_seconds=60, clock=clock)

    with watchdog.attempt("chat", "e-1", timeout_seconds=0):
        for _ in range(185):
            clock.now += 1
            await watchdog.check()

    assert [strikes for _, _, strikes in reports.calls] == [1, 2, 3]


async def test_an_attempt_that_ends_resets_the_strikes_and_one_cut_short_does_not(clock: FakeClock) -> None:
    reports = Reports()
    watchdog = ConsumerWatchdog(reports, timeout_seconds=60, clock=clock)

    async def stuck_then(ending: BaseException | None) -> None:
        with watchdog.attempt("chat", "e-1", timeout_seconds=0):
            clock.now += 61
            await watchdog.check()
            if ending is not None:
                raise ending

    with pytest.raises(asyncio.CancelledError):
        await stuck_then(asyncio.CancelledError())  # a restart cut it short
    after_restart = watchdog.strikes("chat")
    with pytest.raises(RuntimeError):
        await stuck_then(RuntimeError("ended badly, but ended"))
    after_an_end = watchdog.strikes("chat")

    assert after_restart == 1
    assert after_an_end == 0
    assert [strikes for _, _, strikes in reports.calls] == [1, 2]


async def test_consumers_are_watched_one_by_one(clock: FakeClock) -> None:
    reports = Reports()
    watchdog = ConsumerWatchdog(reports, timeout_seconds=60, clock=clock)

    with watchdog.attempt("stuck", "e-1", timeout_seconds=1), watchdog.attempt("fine", "e-2", timeout_seconds=600):
        for _ in range(62):
            clock.now += 1
            await watchdog.check()

    assert reports.calls == [("stuck", "e-1", 1)]
