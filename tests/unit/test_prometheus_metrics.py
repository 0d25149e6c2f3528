"""The Prometheus adapter: what each recording adds, in the text format, per node."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from agentrunner.adapters.metrics.prometheus import PrometheusMetrics
from agentrunner.domain.execution import Execution, ExecutionStatus, Usage
from agentrunner.ports.backlog import AgentQueueFigures


def _values(metrics: PrometheusMetrics) -> dict[str, float]:
    content, _ = metrics.exposition()
    return {
        sample.name + repr(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(content.decode())
        for sample in family.samples
    }


def test_an_ended_execution_counts_status_duration_tokens_and_cost() -> None:
    metrics = PrometheusMetrics()
    started = Execution(execution_id="e", agent="writer", trace_id="t")
    ended = started.model_copy(
        update={
            "status": ExecutionStatus.SUCCEEDED,
            "finished_at": started.created_at + timedelta(seconds=2),
            "provider": "openai",
            "model": "gpt-4o",
            "usage": Usage(input_tokens=100, output_tokens=20),
            "cost_usd": 0.25,
        }
    )

    metrics.execution_finished(ended, "autonomous")
    values = _values(metrics)

    labels = "[('agent', 'writer'), ('mode', 'autonomous')"
    assert values["agentrunner_executions_total" + labels + ", ('status', 'succeeded')]"] == 1
    assert values["agentrunner_execution_duration_seconds_sum" + labels + "]"] == 2
    assert (
        values["agentrunner_llm_tokens_total[('direction', 'input'), ('model', 'gpt-4o'), ('provider', 'openai')]"]
        == 100
    )
    assert (
        values["agentrunner_llm_tokens_total[('direction', 'output'), ('model', 'gpt-4o'), ('provider', 'openai')]"]
        == 20
    )
    assert values["agentrunner_llm_cost_usd_total[('model', 'gpt-4o'), ('provider', 'openai')]"] == 0.25


def test_dead_letters_and_schedule_lateness_are_counted() -> None:
    metrics = PrometheusMetrics()

    metrics.dead_lettered("agent.writer")
    metrics.dead_lettered("agent.writer")
    metrics.schedule_fired(0.004)
    metrics.schedule_fired(-0.001)  # a clock a hair early counts as on time
    values = _values(metrics)

    assert values["agentrunner_dead_letters_total[('queue', 'agent.writer')]"] == 2
    assert values["agentrunner_schedule_lateness_seconds_count[]"] == 2
    assert values["agentrunner_schedule_lateness_seconds_bucket[('le', '0.005')]"] == 2


def test_two_nodes_in_one_process_count_apart() -> None:
    first, second = PrometheusMetrics(), PrometheusMetrics()

    first.dead_lettered("q")

    assert "agentrunner_dead_letters_total[('queue', 'q')]" in _values(first)
    assert "agentrunner_dead_letters_total[('queue', 'q')]" not in _values(second)


def test_the_queue_gauges_follow_each_measure_by_pool_and_agent() -> None:
    metrics = PrometheusMetrics()
    busy = AgentQueueFigures(
        "autonomous", "busy", "agent.busy", ready=3, unacknowledged=1, oldest_queued_age_seconds=4.5
    )
    idle = AgentQueueFigures(
        "continuous", "idle", "agent.idle", ready=0, unacknowledged=0, oldest_queued_age_seconds=None
    )

    metrics.queues_measured([busy, idle])
    first = _values(metrics)
    metrics.queues_measured([idle])  # busy went away
    second = _values(metrics)

    labels = "[('agent', 'busy'), ('pool', 'autonomous')]"
    assert first["agentrunner_queue_ready" + labels] == 3
    assert first["agentrunner_queue_unacknowledged" + labels] == 1
    assert first["agentrunner_queue_oldest_queued_age_seconds" + labels] == 4.5
    assert first["agentrunner_queue_oldest_queued_age_seconds[('agent', 'idle'), ('pool', 'continuous')]"] == 0
    assert not [name for name in second if "'busy'" in name]
