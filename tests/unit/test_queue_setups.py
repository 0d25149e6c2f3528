"""Queue declarations and subscriptions run together, a bounded number at a time
(runtime/agent_queues.py `concurrently`): one after another, 1,000 agents cost seconds of
start-up in broker round trips. Each runs to its end even when another fails, and the first
error is raised afterwards, so what failed is set up by the next sync."""

from __future__ import annotations

import asyncio

import pytest

from agentrunner.runtime.agent_queues import QUEUE_SETUPS_AT_ONCE, concurrently


async def test_setups_overlap_up_to_the_bound_and_never_beyond() -> None:
    running = 0
    most = 0
    all_in = asyncio.Event()

    async def setup() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if most == QUEUE_SETUPS_AT_ONCE:
            all_in.set()
        await all_in.wait()  # held until the bound is reached: one after another never gets there
        running -= 1

    async with asyncio.timeout(10):
        await concurrently([setup() for _ in range(3 * QUEUE_SETUPS_AT_ONCE)])
    assert most == QUEUE_SETUPS_AT_ONCE


async def test_every_setup_runs_to_its_end_and_the_first_error_is_raised_after() -> None:
    done: list[int] = []

    async def setup(i: int) -> None:
        await asyncio.sleep(0)
        if i in (3, 7):
            raise ConnectionError(f"setup {i}")
        done.append(i)

    with pytest.raises(ConnectionError, match="setup 3"):
        await concurrently([setup(i) for i in range(100)])
    assert sorted(done) == [i for i in range(100) if i not in (3, 7)]
