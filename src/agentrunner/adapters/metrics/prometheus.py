"""Metrics with prometheus-client, in a registry of this node's own (no global state), in
the text exposition format Prometheus scrapes from `/metrics`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agentrunner.domain.execution import Execution
from agentrunner.ports.backlog import AgentQueueFigures

# Seconds from accepted to ended: from an instant agent to a long LLM conversation.
EXECUTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30)
# Around the 100 ms that no block of the event loop may reach, and the seconds of a bad one.
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class PrometheusMetrics:
    """Metrics (see `ports.metrics.Metrics`) as Prometheus counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self._executions = Counter(
            "agentrunner_executions",
            "Executions that ended, by agent, execution mode and final status",
            ["agent", "mode", "status"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "agentrunner_execution_duration_seconds",
            "Seconds from an execution's acceptance to its end",
            ["agent", "mode"],
            buckets=EXECUTION_BUCKETS,
            registry=self.registry,
        )
        self._tokens = Counter(
            "agentrunner_llm_tokens",
            "Tokens of ended executions, by provider, model and direction (input/output)",
            ["provider", "model", "direction"],
            registry=self.registry,
        )
        self._cost = Counter(
            "agentrunner_llm_cost_usd",
            "Cost in USD of ended executions, by provider and model (where the price is known)",
            ["provider", "model"],
            registry=self.registry,
        )
        # `check` is the check's `name` (48 characters of a small alphabet at most) or its
        # type: an agent's checks are at most 50, so the series stay bounded.
        self._check_failures = Counter(
            "agentrunner_check_failures",
            "Online checks failed by an execution's answer, by agent, agent version and check",
            ["agent", "version", "check"],
            registry=self.registry,
        )
        self._retries = Counter(
            "agentrunner_execution_retries",
            "Failed attempts tried again, by agent",
            ["agent"],
            registry=self.registry,
        )
        self._dead_letters = Counter(
            "agentrunner_dead_letters",
            "Events that failed every delivery, by queue",
            ["queue"],
            registry=self.registry,
        )
        self._lateness = Histogram(
            "agentrunner_schedule_lateness_seconds",
            "Seconds between a schedule tick's time and its firing",
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )

        self._limits_store_unavailable = Gauge(
            "agentrunner_limits_store_unavailable",
            "1 while the store of concurrency slots and rate-limit buckets (Redis) does not answer this "
            "process: work that needs a slot or a token waits",
            registry=self.registry,
        )
        self._limits_store_waits = Counter(
            "agentrunner_limits_store_waits",
            "Takers of a concurrency slot (kind=slot) or a rate-limit token (kind=rate) that waited for "
            "the store to answer, and running executions that lost their slot and waited for one again "
            "(kind=slot_lost)",
            ["kind"],
            registry=self.registry,
        )
        self._loop_lag = Histogram(
            "agentrunner_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 50 ms (a block of the loop delays everything)",
            buckets=LOOP_LAG_BUCKETS,
            registry=self.registry,
        )
        self._background_errors = Counter(
            "agentrunner_background_errors",
            "Iterations of a background loop (outbox sweep, scheduler, watchdog, ...) that raised an error the "
            "loop did not expect, by task; the loop went on with its next iteration",
            ["task"],
            registry=self.registry,
        )
        self._queue_depth = Gauge(
            "agentrunner_queue_depth",
            "Events waiting for a worker in each agent's queue, measured when /metrics is scraped",
            ["queue"],
            registry=self.registry,
        )
        # The same queues by pool and agent (what a pool's autoscaler sums), with what the
        # workers hold and the oldest wait: GET /queues, measured when /metrics is scraped.
        queue_labels = ["pool", "agent"]
        self._queue_ready = Gauge(
            "agentrunner_queue_ready",
            "Messages waiting for a worker in the agent's queue (the bus's count, every process the same)",
            queue_labels,
            registry=self.registry,
        )
        self._queue_unacknowledged = Gauge(
            "agentrunner_queue_unacknowledged",
            "Executions of the agent that a worker holds (running; a run paused for a human is not counted)",
            queue_labels,
            registry=self.registry,
        )
        self._queue_oldest = Gauge(
            "agentrunner_queue_oldest_queued_age_seconds",
            "Seconds the agent's oldest queued execution has waited for a worker (0 when none waits)",
            queue_labels,
            registry=self.registry,
        )

    def execution_finished(self, execution: Execution, mode: str) -> None:
        self._executions.labels(execution.agent, mode, execution.status.value).inc()
        if execution.finished_at is not None:
            seconds = (execution.finished_at - execution.created_at).total_seconds()
            self._duration.labels(execution.agent, mode).observe(max(seconds, 0.0))
        provider, model = execution.provider or "none", execution.model or "none"
        if execution.usage.input_tokens:
            self._tokens.labels(provider, model, "input").inc(execution.usage.input_tokens)
        if execution.usage.output_tokens:
            self._tokens.labels(provider, model, "output").inc(execution.usage.output_tokens)
        if execution.cost_usd:
            self._cost.labels(provider, model).inc(execution.cost_usd)
        version = str(execution.agent_version) if execution.agent_version else "none"
        for failed in execution.failed_checks:
            self._check_failures.labels(execution.agent, version, failed.check[:48]).inc()

    def attempt_retried(self, agent: str) -> None:
        self._retries.labels(agent).inc()

    def dead_lettered(self, queue: str) -> None:
        self._dead_letters.labels(queue).inc()

    def schedule_fired(self, lateness_seconds: float) -> None:
        self._lateness.observe(max(lateness_seconds, 0.0))

    def queue_depths_measured(self, depths: Mapping[str, int]) -> None:
        self._queue_depth.clear()  # a queue that went away stops being reported
        for queue, depth in depths.items():
            self._queue_depth.labels(queue).set(depth)

    def queues_measured(self, figures: Sequence[AgentQueueFigures]) -> None:
        gauges = (self._queue_ready, self._queue_unacknowledged, self._queue_oldest)
        for gauge in gauges:
            gauge.clear()  # an agent that went away stops being reported
        for figure in figures:
            labels = (figure.pool, figure.agent)
            self._queue_ready.labels(*labels).set(figure.ready)
            self._queue_unacknowledged.labels(*labels).set(figure.unacknowledged)
            self._queue_oldest.labels(*labels).set(figure.oldest_queued_age_seconds or 0.0)

    def limits_store_unavailable(self, unavailable: bool) -> None:
        self._limits_store_unavailable.set(1 if unavailable else 0)

    def limits_store_waited(self, kind: str) -> None:
        self._limits_store_waits.labels(kind).inc()

    def event_loop_lag(self, seconds: float) -> None:
        self._loop_lag.observe(max(seconds, 0.0))

    def background_error(self, task: str) -> None:
        self._background_errors.labels(task).inc()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
