"""Background tasks whose failure is never lost: `spawn` starts one and, when it ends with
an exception, logs it once with the task's name. Without it, a task that fails while its
owner is not awaiting it reports nothing until it is garbage-collected ("Task exception was
never retrieved", with no trace id), or is silently dropped by an owner that cancels it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from agentrunner.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")


def spawn(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """Run `coro` as a task named `name`; its exception, if it ends with one, is retrieved
    and logged here (its owner may still await the task and see it)."""
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_log_failure)
    return task


async def cancelled(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (if any) and wait until it has ended; its cancellation is not an error."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _log_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    error = task.exception()  # retrieved: asyncio will not report it again
    if error is not None:
        log.error("background task failed", task=task.get_name(), error=str(error), exc_info=error)
