"""Background work whose failure is never lost.

`spawn` starts one task and, when it ends with an exception, logs it once with the task's
name. Without it, a task that fails while its owner is not awaiting it reports nothing until
it is garbage-collected ("Task exception was never retrieved", with no trace id), or is
silently dropped by an owner that cancels it.

`forever` and `every` run a loop of the platform (the outbox sweep, the scheduler, the
watchdog, ...) one iteration at a time under supervision: an iteration that raises is logged
with its traceback, counted (`agentrunner_background_errors_total{task}`) and followed by
the next one, after a pause that doubles while iterations keep failing (`FAILURE_PAUSE_*`),
so a persistent error neither ends the loop for the life of the process nor spins. A loop
still handles the errors it expects (a dependency not answering: an `AgentRunnerError`)
itself, with its own message; the supervisor sees what it did not expect. Cancelling the
task (its owner's `stop`, through `cancelled`) ends the loop at once, mid-iteration too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

from agentrunner.logs import get_logger
from agentrunner.ports.metrics import Metrics

log = get_logger(__name__)

T = TypeVar("T")
Step = Callable[[], Awaitable[None]]

# After the n-th failed iteration in a row, the next waits FIRST * 2**(n-1) s, at most MAX:
# a bug that fails every iteration is logged a few times a minute, not once per wake-up.
FAILURE_PAUSE_FIRST_SECONDS = 0.1
FAILURE_PAUSE_MAX_SECONDS = 30.0


def spawn(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """Run `coro` as a task named `name`; its exception, if it ends with one, is retrieved
    and logged here (its owner may still await the task and see it)."""
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_log_failure)
    return task


def forever(step: Step, *, task: str, metrics: Metrics | None = None) -> asyncio.Task[None]:
    """Run `step` again and again, under supervision (see the module docstring), as a task
    named `task` until it is cancelled. `step` does its own waiting (for a timer, an event):
    it is called again as soon as it returns.

    Contract: an exception from `step` (anything but cancellation) is logged with its
    traceback and `task`, counted on `metrics.background_error(task)`, and never ends the
    loop; the task ends only when cancelled."""
    return spawn(_supervise(step, task, metrics), name=task)


def every(
    seconds: float, step: Step, *, task: str, metrics: Metrics | None = None, at_once: bool = False
) -> asyncio.Task[None]:
    """Run `step` every `seconds` (a pause, then `step`; with `at_once`, the first `step`
    without the pause), under supervision as in `forever`: a failed `step` is followed by
    the next pause and the next `step`."""
    first = at_once

    async def iteration() -> None:
        nonlocal first
        if not first:
            await asyncio.sleep(seconds)
        first = False
        await step()

    return forever(iteration, task=task, metrics=metrics)


async def cancelled(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (if any) and wait until it has ended; its cancellation is not an error."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def iteration_failed(task: str, error: Exception, metrics: Metrics | None, **context: object) -> None:
    """Say that an iteration of the background loop `task` raised `error`, which the loop
    did not expect and goes on after: logged with its traceback, counted on `metrics`. For a
    loop that cannot be written as a `forever` step (an `async for` over a watcher)."""
    log.error(
        "background task iteration failed; it goes on",
        task=task,
        error=f"{type(error).__name__}: {error}",
        exc_info=error,
        **context,
    )
    if metrics is not None:
        metrics.background_error(task)


async def _supervise(step: Step, task: str, metrics: Metrics | None) -> NoReturn:
    failures = 0
    while True:
        try:
            await step()
        except Exception as exc:  # noqa: BLE001 - logged with its traceback and counted, the loop goes on
            failures += 1
            pause = min(FAILURE_PAUSE_FIRST_SECONDS * 2 ** (failures - 1), FAILURE_PAUSE_MAX_SECONDS)
            iteration_failed(task, exc, metrics, failures_in_a_row=failures, next_in_seconds=pause)
            await asyncio.sleep(pause)
        else:
            failures = 0


def _log_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    error = task.exception()  # retrieved: asyncio will not report it again
    if error is not None:
        log.error("background task failed", task=task.get_name(), error=str(error), exc_info=error)
