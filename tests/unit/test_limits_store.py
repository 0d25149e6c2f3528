"""The limits' store as a process sees it: an outage is logged once with a recovery line
that says how long it lasted, shown by the `limits` readiness check and in the metrics."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from agentrunner.adapters.metrics.prometheus import PrometheusMetrics
from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.runtime.limits_store import LimitsStore


def _values(metrics: PrometheusMetrics) -> dict[str, float]:
    content, _ = metrics.exposition()
    return {
        sample.name + repr(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(content.decode())
        for sample in family.samples
        if sample.name.startswith("agentrunner_limits")
    }


async def test_an_outage_is_logged_once_shown_while_it_lasts_and_its_end_says_how_long() -> None:
    now = [100.0]
    metrics = PrometheusMetrics()
    store = LimitsStore(metrics=metrics, clock=lambda: now[0])
    down = DependencyUnavailableError("cache redis://127.0.0.1:1/0 did not answer slot 'agent:a': refused")

    with capture_logs() as entries:
        store.answered()  # answering all along: nothing to say
        for _ in range(50):  # fifty takers failing: one line
            store.failed(down)
        store.waited("slot")
        store.waited("rate")
        store.waited("slot")
        during = _values(metrics)
        now[0] += 12.5
        with pytest.raises(DependencyUnavailableError) as raised:
            await store.check()
        store.answered()
        store.answered()
        await store.check()  # answering: the check passes
        after = _values(metrics)

    assert [(e["log_level"], e["event"].split(":")[0]) for e in entries] == [
        ("warning", "limits waiting"),
        ("info", "limits store answering again"),
    ]
    assert "never runs unlimited" in entries[0]["event"]
    assert entries[0]["error"] == down.message
    assert entries[1]["outage_seconds"] == 12.5
    assert raised.value.message.startswith("waiting: cache unavailable for 12 s")
    assert "did not answer slot 'agent:a'" in raised.value.message
    assert during["agentrunner_limits_store_unavailable[]"] == 1
    assert after["agentrunner_limits_store_unavailable[]"] == 0
    assert after["agentrunner_limits_store_waits_total[('kind', 'slot')]"] == 2
    assert after["agentrunner_limits_store_waits_total[('kind', 'rate')]"] == 1


async def test_a_second_outage_is_logged_again() -> None:
    store = LimitsStore()
    down = DependencyUnavailableError("cache did not answer")

    with capture_logs() as entries:
        for _ in range(2):
            store.failed(down)
            store.failed(down)
            store.answered()

    assert [e["log_level"] for e in entries] == ["warning", "info", "warning", "info"]
