"""A background task's failure is logged once, with the task's name, and never reported
again by asyncio as "Task exception was never retrieved"; a supervised loop logs and counts
a failed iteration and goes on, pausing longer while iterations keep failing, and ends at
once when cancelled."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from agentrunner.adapters.metrics.prometheus import PrometheusMetrics
from agentrunner.background import (
    FAILURE_PAUSE_FIRST_SECONDS,
    cancelled,
    every,
    forever,
    spawn,
)
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


class Steps:
    """A loop's step that fails the iterations listed in `failing` (1-based), recording
    when (monotonic) each iteration began."""

    def __init__(self, failing: set[int], then: asyncio.Event | None = None) -> None:
        self.failing = failing
        self.began: list[float] = []
        self.then = then

    async def __call__(self) -> None:
        self.began.append(time.monotonic())
        if len(self.began) in self.failing:
            raise RuntimeError(f"iteration {len(self.began)} broke")
        if self.then is not None:
            await self.then.wait()
        await asyncio.sleep(0)  # a step waits for something: here, only its turn


def _errors(metrics: PrometheusMetrics, task: str) -> float:
    content, _ = metrics.exposition()
    return sum(
        sample.value
        for family in text_string_to_metric_families(content.decode())
        for sample in family.samples
        if sample.name == "agentrunner_background_errors_total" and sample.labels == {"task": task}
    )


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_loop_goes_on_after_failed_iterations_pausing_longer_while_they_fail() -> None:
    steps, metrics = Steps(failing={1, 2, 3}), PrometheusMetrics()
    with capture_logs() as logs:
        task = forever(steps, task="sweep", metrics=metrics)
        try:
            await _until(lambda: len(steps.began) >= 5)
        finally:
            await cancelled(task)

    failures = [entry for entry in logs if entry["event"] == "background task iteration failed; it goes on"]
    assert [(entry["task"], entry["failures_in_a_row"], entry["next_in_seconds"]) for entry in failures] == [
        ("sweep", 1, FAILURE_PAUSE_FIRST_SECONDS),
        ("sweep", 2, FAILURE_PAUSE_FIRST_SECONDS * 2),
        ("sweep", 3, FAILURE_PAUSE_FIRST_SECONDS * 4),
    ]
    assert all(isinstance(entry["exc_info"], RuntimeError) for entry in failures)
    assert _errors(metrics, "sweep") == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(steps.began)]
    assert gaps[2] >= FAILURE_PAUSE_FIRST_SECONDS * 4 > gaps[0] >= FAILURE_PAUSE_FIRST_SECONDS
    assert gaps[3] < FAILURE_PAUSE_FIRST_SECONDS  # iteration 4 succeeded: no pause after it


async def test_cancelling_a_loop_ends_it_at_once_mid_iteration_or_mid_pause() -> None:
    blocked = Steps(failing=set(), then=asyncio.Event())  # never set: the iteration waits
    pausing = Steps(failing={1})
    tasks = [forever(blocked, task="blocked"), forever(pausing, task="pausing")]
    await _until(lambda: len(blocked.began) == 1 and len(pausing.began) == 1)
    began = time.monotonic()
    for task in tasks:
        await cancelled(task)
    assert time.monotonic() - began < FAILURE_PAUSE_FIRST_SECONDS / 2
    assert all(task.cancelled() for task in tasks)


async def test_every_pauses_before_each_step_or_runs_the_first_at_once() -> None:
    late, early = Steps(failing=set()), Steps(failing=set())
    started = time.monotonic()
    tasks = [every(0.2, late, task="late"), every(0.2, early, task="early", at_once=True)]
    try:
        await _until(lambda: len(late.began) >= 1 and len(early.began) >= 2)
    finally:
        for task in tasks:
            await cancelled(task)
    assert early.began[0] - started < 0.1
    assert late.began[0] - started >= 0.2
    assert early.began[1] - early.began[0] >= 0.2
