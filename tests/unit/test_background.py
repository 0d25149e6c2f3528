"""A background task's failure is logged once, with the task's name, and never reported
again by asyncio as "Task exception was never retrieved"."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from structlog.testing import capture_logs

from agentrunner.background import spawn
from agentrunner.domain.errors import DependencyUnavailableError


async def _fails() -> None:
    raise DependencyUnavailableError("database is not reachable")


async def test_a_failed_background_task_is_logged_once_and_not_reported_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        with capture_logs() as logs:
            task = spawn(_fails(), name="outbox-sweep")
            await asyncio.wait([task])
            await asyncio.sleep(0)  # the done callback runs on the next loop turn
            del task
            gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert [(entry["event"], entry["task"], entry["error"]) for entry in logs] == [
        ("background task failed", "outbox-sweep", "database is not reachable")
    ]
    assert reported == []


async def test_a_cancelled_or_successful_task_logs_nothing() -> None:
    with capture_logs() as logs:
        done = spawn(asyncio.sleep(0), name="quick")
        stopped = spawn(asyncio.sleep(60), name="stopped")
        stopped.cancel()
        await asyncio.wait([done, stopped])
        await asyncio.sleep(0)
    assert logs == []
