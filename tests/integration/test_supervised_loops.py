"""Every background loop runs under supervision (background.py): an error its iteration did
not expect (a bug, here a RuntimeError raised once by the loop's real dependency: our SQL
store, bus, cache or metrics subclassed) is logged with its traceback and counted on
`agentrunner_background_errors_total{task}`, and the next iteration runs. Before, such an
error ended the loop for the life of the process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from structlog.testing import capture_logs

from agentrunner.adapters.bus.memory import InMemoryEventBus
from agentrunner.adapters.cache.memory import InMemoryCache
from agentrunner.adapters.config.watch import watch_agent_files
from agentrunner.adapters.metrics.prometheus import PrometheusMetrics
from agentrunner.adapters.providers.catalog import SettingsProviderCatalog
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.adapters.tools.catalog import ToolShelf
from agentrunner.api import idempotency
from agentrunner.api.idempotency import IdempotencyMiddleware
from agentrunner.background import cancelled, spawn
from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution
from agentrunner.node import Node
from agentrunner.runtime.collaboration import CollaborativePool
from agentrunner.runtime.limits import ConcurrencyLimits
from agentrunner.runtime.limits_store import LimitsStore
from agentrunner.runtime.loop_lag import LoopLagMonitor
from agentrunner.runtime.outbox import OutboxRelay
from agentrunner.runtime.plan_runs import PlanRuns
from agentrunner.runtime.registry import AgentRegistry
from agentrunner.runtime.retention import RetentionPurger, RetentionWindows
from agentrunner.runtime.schedule_watch import FireWatch
from agentrunner.runtime.scheduler import Scheduler
from agentrunner.runtime.watchdog import ConsumerWatchdog
from agentrunner.runtime.webhooks import WebhookDispatcher
from agentrunner.settings import Settings

FAILED = "background task iteration failed; it goes on"


class Bug:
    """Counts the calls of the methods it breaks; the first call of `method` raises."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.calls = 0

    def hit(self, method: str) -> None:
        if method != self.method:
            return
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError(f"{method}: a bug, not an outage")


class BuggyStore(SQLStateStore):
    """The real SQL store, one of whose methods raises a RuntimeError on its first call."""

    def __init__(self, url: str, bug: Bug) -> None:
        super().__init__(url)
        self.bug = bug

    async def pending_events(self, **kwargs: Any) -> Any:
        self.bug.hit("pending_events")
        return await super().pending_events(**kwargs)

    async def mark_published(self, entry_ids: Any) -> None:
        self.bug.hit("mark_published")
        await super().mark_published(entry_ids)

    async def due_webhook_deliveries(self, **kwargs: Any) -> Any:
        self.bug.hit("due_webhook_deliveries")
        return await super().due_webhook_deliveries(**kwargs)

    async def unfinished_fires(self, **kwargs: Any) -> Any:
        self.bug.hit("unfinished_fires")
        return await super().unfinished_fires(**kwargs)

    async def list_plan_runs(self, **kwargs: Any) -> Any:
        self.bug.hit("list_plan_runs")
        return await super().list_plan_runs(**kwargs)

    async def schedules_version(self) -> str:
        self.bug.hit("schedules_version")
        return await super().schedules_version()

    async def purge(self, kind: Any, **kwargs: Any) -> int:
        self.bug.hit("purge")
        return await super().purge(kind, **kwargs)

    async def touch_idempotency_key(self, key: str) -> None:
        self.bug.hit("touch_idempotency_key")
        await super().touch_idempotency_key(key)


def _errors(metrics: PrometheusMetrics, task: str) -> float:
    content, _ = metrics.exposition()
    return sum(
        sample.value
        for family in text_string_to_metric_families(content.decode())
        for sample in family.samples
        if sample.name == "agentrunner_background_errors_total" and sample.labels == {"task": task}
    )


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def _assert_logged_once(entries: Sequence[Mapping[str, Any]], task: str, method: str) -> None:
    [failure] = [entry for entry in entries if entry["event"] == FAILED]
    assert failure["task"] == task
    assert failure["log_level"] == "error"
    error = failure["exc_info"]
    assert isinstance(error, RuntimeError)
    assert str(error) == f"{method}: a bug, not an outage"
    assert error.__traceback__ is not None  # logged with its traceback


async def _survives(task: str, bug: Bug, metrics: PrometheusMetrics, entries: Sequence[Mapping[str, Any]]) -> None:
    """The loop `task` hit `bug` once, said so and counted it, and called the method again."""
    await _until(lambda: bug.calls >= 2, f"{task} never ran again after the error")
    assert _errors(metrics, task) == 1
    _assert_logged_once(entries, task, bug.method)


@pytest.fixture
async def bus() -> AsyncIterator[InMemoryEventBus]:
    event_bus = InMemoryEventBus()
    await event_bus.start()
    yield event_bus
    await event_bus.close()


async def _store(sqlite_url: str, method: str) -> BuggyStore:
    store = BuggyStore(sqlite_url, Bug(method))
    await store.start()
    return store


async def test_outbox_sweep(sqlite_url: str, bus: InMemoryEventBus) -> None:
    store, metrics = await _store(sqlite_url, "pending_events"), PrometheusMetrics()
    received: list[Event] = []

    async def record(event: Event) -> None:
        received.append(event)

    await bus.subscribe("q.left", ["left.#"], record)
    event = Event(topic="left.behind", trace_id="t")
    await store.create_execution(Execution(execution_id="e", agent="a", trace_id="t"), events=[event])
    relay = OutboxRelay(bus=bus, store=store, interval_seconds=0.01, grace_seconds=0, metrics=metrics)
    with capture_logs() as entries:
        await relay.start()
        try:
            await _survives("outbox-sweep", store.bug, metrics, entries)
            await _until(lambda: bool(received), "the sweep after the error did not publish the event")
        finally:
            await relay.stop()
            await store.close()


async def test_outbox_marks(sqlite_url: str, bus: InMemoryEventBus) -> None:
    store, metrics = await _store(sqlite_url, "mark_published"), PrometheusMetrics()
    # The sweep waits an hour: only the marks written by the background writer are seen.
    relay = OutboxRelay(bus=bus, store=store, interval_seconds=3600, mark_every_seconds=0.01, metrics=metrics)
    first, second = Event(topic="x.1", trace_id="t"), Event(topic="x.2", trace_id="t")
    await store.create_execution(Execution(execution_id="e", agent="a", trace_id="t"), events=[first, second])
    with capture_logs() as entries:
        await relay.start()
        try:
            await relay.deliver([first])
            await _until(lambda: store.bug.calls == 1, "the first mark was never written")
            await relay.deliver([second])
            await _survives("outbox-marks", store.bug, metrics, entries)
            # The next iteration wrote the second mark; the first was lost with the error
            # (the sweep publishes that event again).
            deadline = time.monotonic() + 10
            while (pending := [entry.event.event_id for entry in await store.pending_events()]) != [first.event_id]:
                assert time.monotonic() < deadline, f"still pending: {pending}"
                await asyncio.sleep(0.01)
        finally:
            await relay.stop()
            await store.close()


class NoSender:
    """A webhook receiver's edge: never reached here (no delivery is due)."""

    async def post(self, url: str, body: bytes, headers: Any, *, timeout_seconds: float) -> int:
        raise AssertionError("no delivery was due")

    async def close(self) -> None:
        return None


async def test_webhook_sweep(sqlite_url: str, bus: InMemoryEventBus) -> None:
    store, metrics = await _store(sqlite_url, "due_webhook_deliveries"), PrometheusMetrics()
    dispatcher = WebhookDispatcher(
        bus=bus,
        executions=store,
        deliveries=store,
        sender=NoSender(),
        secret=b"s",
        retry_seconds=60,
        backoff_base_seconds=1,
        timeout_seconds=1,
        sweep_seconds=0.01,
        metrics=metrics,
    )
    with capture_logs() as entries:
        await dispatcher.start()
        try:
            await _survives("webhook-sweep", store.bug, metrics, entries)
        finally:
            await dispatcher.stop()
            await store.close()


async def test_scheduler_watch(sqlite_url: str, bus: InMemoryEventBus) -> None:
    store, metrics = await _store(sqlite_url, "unfinished_fires"), PrometheusMetrics()
    watch = FireWatch(
        executions=store, schedules=store, bus=bus, deliver=lambda events: None, interval_seconds=0.01, metrics=metrics
    )
    with capture_logs() as entries:
        await watch.start()
        try:
            await _survives("scheduler-watch", store.bug, metrics, entries)
        finally:
            await watch.stop()
            await store.close()


async def test_scheduler_loop(sqlite_url: str, bus: InMemoryEventBus) -> None:
    store, metrics = await _store(sqlite_url, "schedules_version"), PrometheusMetrics()
    relay = OutboxRelay(bus=bus, store=store)
    scheduler = Scheduler(store=store, relay=relay, registry=AgentRegistry(), refresh_seconds=0.05, metrics=metrics)
    with capture_logs() as entries:
        await scheduler.start()
        try:
            await _survives("scheduler-loop", store.bug, metrics, entries)
        finally:
            await scheduler.stop()
            await store.close()


async def test_clarification_timeouts(sqlite_url: str, bus: InMemoryEventBus, tmp_path: Path) -> None:
    store, metrics = await _store(sqlite_url, "list_plan_runs"), PrometheusMetrics()
    relay, registry = OutboxRelay(bus=bus, store=store), AgentRegistry()
    pool = CollaborativePool(
        bus=bus,
        executions=store,
        run_store=store,
        registry=registry,
        catalog=SettingsProviderCatalog(Settings(_env_file=None, data_dir=tmp_path)),
        relay=relay,
        plan_runs=PlanRuns(executions=store, runs=store, relay=relay, registry=registry),
        worker_id="w",
        sweep_seconds=0.01,
        metrics=metrics,
    )
    with capture_logs() as entries:
        await pool.start()
        try:
            await _survives("clarification-timeouts", store.bug, metrics, entries)
        finally:
            await pool.stop()
            await store.close()


async def test_retention_purge(sqlite_url: str) -> None:
    store, metrics = await _store(sqlite_url, "purge"), PrometheusMetrics()
    day = timedelta(days=1)
    purger = RetentionPurger(
        retention=store,
        windows=RetentionWindows(
            executions=day, fires=day, dead_letters=day, webhook_deliveries=day, idempotency_keys=day
        ),
        interval_seconds=0.01,
        metrics=metrics,
    )
    with capture_logs() as entries:
        await purger.start()
        try:
            await _survives("retention-purge", store.bug, metrics, entries)
        finally:
            await purger.stop()
            await store.close()


async def test_consumer_watchdog() -> None:
    metrics, bug = PrometheusMetrics(), Bug("on_unresponsive")

    async def on_unresponsive(agent: str, execution_id: str, strikes: int) -> None:
        bug.hit("on_unresponsive")  # the pool's handler (it restarts the consumer)

    watchdog = ConsumerWatchdog(on_unresponsive, timeout_seconds=0.06, metrics=metrics)
    with capture_logs() as entries, watchdog.attempt("chat", "e-1", timeout_seconds=0):
        await watchdog.start()
        try:
            await _survives("consumer-watchdog", bug, metrics, entries)
            assert watchdog.strikes("chat") >= 2  # found again, and reported again
        finally:
            await watchdog.stop()


class BuggyLagMetrics(PrometheusMetrics):
    """The real metrics, whose recording of the loop's lag raises once."""

    def __init__(self) -> None:
        super().__init__()
        self.bug = Bug("event_loop_lag")

    def event_loop_lag(self, seconds: float) -> None:
        self.bug.hit("event_loop_lag")
        super().event_loop_lag(seconds)


async def test_event_loop_lag() -> None:
    metrics = BuggyLagMetrics()
    monitor = LoopLagMonitor(metrics=metrics, interval_seconds=0.01)
    with capture_logs() as entries:
        await monitor.start()
        try:
            await _survives("event-loop-lag", metrics.bug, metrics, entries)
        finally:
            await monitor.stop()


class BuggyCache(InMemoryCache):
    """The real in-process slots store, whose renewal raises once."""

    def __init__(self) -> None:
        super().__init__()
        self.bug = Bug("renew_slot")

    async def renew_slot(self, *args: Any) -> Any:
        self.bug.hit("renew_slot")
        return await super().renew_slot(*args)


async def test_slot_renewal() -> None:
    cache, metrics = BuggyCache(), PrometheusMetrics()
    limits = ConcurrencyLimits(cache, provider_limits={}, lease_seconds=0.3, store=LimitsStore(metrics=metrics))
    config = AgentConfig.model_validate(
        {
            "name": "a",
            "agent_type": "t",
            "execution_mode": "autonomous",
            "llm_config": {"provider": "echo", "model": "echo"},
            "limits": {"max_concurrency": 1},
        }
    )
    with capture_logs() as entries:
        async with limits.held(config, "holder"):
            await _survives("slot-renewal", cache.bug, metrics, entries)


async def test_agent_files_watch(tmp_path: Path) -> None:
    metrics, bug = PrometheusMetrics(), Bug("reload")

    async def reload() -> None:
        bug.hit("reload")  # the node's reload of the agents

    watch = spawn(watch_agent_files(tmp_path, reload, metrics=metrics), name="agent-files-watch")
    with capture_logs() as entries:
        try:
            # A change every 0.5 s until the second reload: awatch may start after the first.
            deadline = time.monotonic() + 10
            n = 0
            while bug.calls < 2:
                assert time.monotonic() < deadline, "the watch never reloaded again after the error"
                (tmp_path / f"agent{n}.yml").write_text("name: a\n")
                n += 1
                await asyncio.sleep(0.5)
        finally:
            await cancelled(watch)
    assert _errors(metrics, "agent-files-watch") == 1
    _assert_logged_once(entries, "agent-files-watch", "reload")


async def test_a_schema_file_changed_below_the_agents_directory_reloads_the_agents(tmp_path: Path) -> None:
    reloaded = asyncio.Event()

    async def reload() -> None:
        reloaded.set()

    (tmp_path / "schemas").mkdir()
    watch = spawn(watch_agent_files(tmp_path, reload), name="agent-files-watch")
    try:
        # A change every 0.5 s until a reload: awatch may start after the first.
        async with asyncio.timeout(10):
            n = 0
            while not reloaded.is_set():
                (tmp_path / "schemas" / "city.json").write_text(f'{{"type": "object", "title": "v{n}"}}')
                n += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reloaded.wait(), 0.5)
    finally:
        await cancelled(watch)


class BuggyShelf(ToolShelf):
    """The real tool shelf, whose retry of unreachable MCP servers raises once; a retry is
    due every 10 ms (as if a server were in an outage)."""

    def __init__(self, bug: Bug, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bug = bug

    async def until_retry_due(self) -> None:
        await asyncio.sleep(0.01)

    async def retry_unreachable(self) -> bool:
        self.bug.hit("retry_unreachable")
        return await super().retry_unreachable()


async def test_mcp_retry(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    node = Node(Settings(_env_file=None, agents_dir=tmp_path / "agents", data_dir=tmp_path))
    bug = Bug("retry_unreachable")
    # The reloader runs the retry loop on the shelf it was given: the buggy one here.
    node.tools = node.reloader.tools = BuggyShelf(bug, store=node.store.sessions, bus=node.bus)
    with capture_logs() as entries:
        async with node.running():
            await _survives("mcp-retry", bug, node.metrics, entries)


async def test_idempotency_touch(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store, metrics = await _store(sqlite_url, "touch_idempotency_key"), PrometheusMetrics()
    monkeypatch.setattr(idempotency, "TOUCH_EVERY_SECONDS", 0.01)

    async def slow(request: Request) -> JSONResponse:
        # Runs while its key is kept alive: until the keep-alive touched it after the error.
        await _until(lambda: store.bug.calls >= 2, "the key was never touched again after the error")
        return JSONResponse({"ok": True})

    app = IdempotencyMiddleware(
        Starlette(routes=[Route("/work", slow, methods=["POST"])]), store=store, ttl_seconds=60, metrics=metrics
    )
    with capture_logs() as entries:
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
                answer = await http.post("/work", json={}, headers={"Idempotency-Key": "k-1"})
        finally:
            await store.close()
    assert answer.status_code == 200
    await _survives("idempotency-touch", store.bug, metrics, entries)
