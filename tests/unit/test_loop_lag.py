"""The event-loop lag monitor: a block of the loop is measured, counted on the metric and
warned about, at once the first time and then at most once per interval."""

from __future__ import annotations

import asyncio
import time

from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from agentrunner.adapters.metrics.prometheus import PrometheusMetrics
from agentrunner.runtime.loop_lag import LoopLagMonitor


def _count(metrics: PrometheusMetrics, name: str) -> float:
    content, _ = metrics.exposition()
    return sum(
        sample.value
        for family in text_string_to_metric_families(content.decode())
        for sample in family.samples
        if sample.name == name
    )


async def _ticks(metrics: PrometheusMetrics, at_least: float) -> None:
    async with asyncio.timeout(10):
        while _count(metrics, "agentrunner_event_loop_lag_seconds_count") < at_least:
            await asyncio.sleep(0.01)


async def test_a_blocked_loop_is_measured_and_warned_about_once_per_interval() -> None:
    metrics = PrometheusMetrics()
    monitor = LoopLagMonitor(metrics=metrics, interval_seconds=0.01, warn_seconds=0.1, warn_every_seconds=60)
    with capture_logs() as entries:
        await monitor.start()
        await _ticks(metrics, 1)
        time.sleep(0.3)  # the block under test
        seen = _count(metrics, "agentrunner_event_loop_lag_seconds_count")
        await _ticks(metrics, seen + 2)
        time.sleep(0.3)  # a second block, within the minute
        seen = _count(metrics, "agentrunner_event_loop_lag_seconds_count")
        await _ticks(metrics, seen + 2)
        await monitor.stop()

    assert monitor.max_lag_seconds >= 0.2
    warnings = [entry for entry in entries if entry["event"].startswith("event loop blocked")]
    assert len(warnings) == 1
    assert warnings[0]["worst_seconds"] >= 0.2
    # Both blocks are on the histogram, over its 0.1 s bucket.
    content, _ = metrics.exposition()
    over = [
        sample
        for family in text_string_to_metric_families(content.decode())
        for sample in family.samples
        if sample.name == "agentrunner_event_loop_lag_seconds_bucket" and sample.labels["le"] == "0.1"
    ]
    assert _count(metrics, "agentrunner_event_loop_lag_seconds_count") - over[0].value >= 2
