"""The autonomous pool: consumes agents' work queues and runs each task in a fresh context.

An agent's queue receives `invoke.<agent>` (an execution the orchestrator recorded) and
every event matching the agent's `event_subscriptions` (a new execution per event, chains
through `agent.output.<agent>` included, up to a depth limit against loops).
Delivery is at least once; the execution record makes the result idempotent: a message
for an execution that already ended is acknowledged without running it again, and an
event's execution id derives from the event, so a redelivered event finds its execution.

The pool is the consumer: it takes the messages, holds the execution's slots, runs each
attempt in a task that a cancel request or the watchdog can stop, and restarts a stuck
consumer. What an attempt's end means, retries included, is `runtime/attempts.py`; how
the end or the pause is recorded and announced, `runtime/run_endings.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from functools import partial
from typing import Any

from cachetools import TTLCache

from agentrunner.domain.agent import AgentConfig, ExecutionMode
from agentrunner.domain.checks import checked
from agentrunner.domain.errors import AgentRunnerError, ConsumerUnresponsiveError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionStatus, ToolCallRecord, utcnow
from agentrunner.domain.llm import Completion, Spend
from agentrunner.logs import get_logger
from agentrunner.ports.bus import EventBus, Subscription
from agentrunner.ports.metrics import Metrics
from agentrunner.ports.providers import LLMProvider, ProviderCatalog
from agentrunner.ports.state import ExecutionStore, SessionStore, StepJournal
from agentrunner.ports.tools import ToolCatalog, ToolContext
from agentrunner.runtime.agent_queues import AgentQueues
from agentrunner.runtime.agent_run import run_agent
from agentrunner.runtime.attempts import Attempts, CancelledByUser, NotStartable
from agentrunner.runtime.budgets import Budgets
from agentrunner.runtime.chains import chain_tenant, start_for_event
from agentrunner.runtime.conversation import DEFAULT_MAX_HISTORY_BYTES, converse
from agentrunner.runtime.execution_stream import text_progress
from agentrunner.runtime.journal import RunJournal
from agentrunner.runtime.limits import ConcurrencyLimits, HeldSlots
from agentrunner.runtime.outbox import OutboxRelay
from agentrunner.runtime.pinned_configs import PinnedConfigs
from agentrunner.runtime.rate_limits import RateLimits
from agentrunner.runtime.registry import AgentRegistry
from agentrunner.runtime.run_endings import RunEndings, ended
from agentrunner.runtime.topics import CANCEL_PATTERN, invoke_topic, progress_topic, worker_cancel_queue
from agentrunner.runtime.watchdog import ConsumerWatchdog
from agentrunner.tracing import as_tenant, traced

log = get_logger(__name__)

# A scheduled agent invoked by hand runs like an autonomous one: once, in a fresh context.
AUTONOMOUS_POOL_MODES = frozenset({ExecutionMode.AUTONOMOUS, ExecutionMode.SCHEDULED})
# Continuous agents: one queue each, taken one message at a time, with session memory.
CONTINUOUS_POOL_MODES = frozenset({ExecutionMode.CONTINUOUS})
# How long a cancel request for an attempt not (yet) running here is kept for it.
EARLY_CANCEL_SECONDS = 300.0


class AgentPool:
    """Runs the agents of some execution modes from their queues (the autonomous pool, the
    continuous pool); more processes of a pool share its load."""

    def __init__(
        self,
        *,
        bus: EventBus,
        executions: ExecutionStore,
        sessions: SessionStore,
        registry: AgentRegistry,
        catalog: ProviderCatalog,
        relay: OutboxRelay,
        worker_id: str,
        prefetch: int = 10,
        max_chain_depth: int = 5,
        llm_retry_base_seconds: float = 0.5,
        modes: frozenset[ExecutionMode] = AUTONOMOUS_POOL_MODES,
        heartbeat_timeout_seconds: float = 60.0,
        max_restarts: int = 3,
        metrics: Metrics | None = None,
        limits: ConcurrencyLimits | None = None,
        budgets: Budgets | None = None,
        rates: RateLimits | None = None,
        tools: ToolCatalog | None = None,
        max_history_bytes: int = DEFAULT_MAX_HISTORY_BYTES,
        journal: StepJournal | None = None,
        pinned: PinnedConfigs | None = None,
    ) -> None:
        self._max_history_bytes = max_history_bytes
        self._pinned = pinned
        self._budgets = budgets
        self._limits = limits
        self._tools = tools
        self._bus = bus
        self._executions = executions
        self._sessions = sessions
        self._worker_id = worker_id
        self._max_chain_depth = max_chain_depth
        self._llm_retry_base = llm_retry_base_seconds
        self._registry = registry
        self._modes = modes
        # What an attempt's end means (retries included) is decided apart from how the pool
        # takes, runs and cancels it, and recorded apart again: the three change for different reasons.
        self._attempts = Attempts(
            executions=executions,
            sessions=sessions,
            catalog=catalog,
            worker_id=worker_id,
            attempt=self._attempt,
            progress=self._progress,
            metrics=metrics,
            rates=rates,
            journal=journal,
            max_history_bytes=max_history_bytes,
        )
        self._endings = RunEndings(
            executions=executions, relay=relay, registry=registry, progress=self._progress, metrics=metrics
        )
        self._subscriptions: list[Subscription] = []
        self._queues = AgentQueues(bus=bus, handler=self.handle, prefetch=prefetch)
        self._running: dict[str, asyncio.Task[Completion]] = {}
        self._in_hand: set[str] = set()  # executions being handled by this process
        self._dropped: set[str] = set()  # of those, the ones a second delivery came for meanwhile
        self._cancelled: dict[str, Event] = {}  # execution id -> the cancel request
        # Cancel requests for no attempt running here: an execution this worker marked running
        # but whose attempt has not begun (the orchestrator saw it running and asked), or one
        # between two attempts; most are another worker's, forgotten after a while.
        self._early_cancels: TTLCache[str, Event] = TTLCache(maxsize=10_000, ttl=EARLY_CANCEL_SECONDS)
        self._abandoned: set[asyncio.Task[Completion]] = set()
        self._max_restarts = max_restarts
        self._watchdog = ConsumerWatchdog(
            self._unresponsive, timeout_seconds=heartbeat_timeout_seconds, metrics=metrics
        )

    async def start(self) -> None:
        """Consume the work queue of every available agent in this pool's modes, and the
        cancel requests for the executions this process runs; watch their heartbeats."""
        await self._watchdog.start()
        self._subscriptions.append(
            await self._bus.subscribe(
                worker_cancel_queue(self._worker_id), [CANCEL_PATTERN], self._on_cancel, prefetch=4, exclusive=True
            )
        )
        await self.sync()

    async def sync(self) -> None:
        """Consume exactly the queues of the registry's available agents, bound to their
        current subscriptions: new agents start, removed ones stop (their queue keeps what
        it holds), changed subscriptions are re-bound. Prompts and models need nothing:
        each task reads its agent's config when it runs."""
        await self._queues.sync(self._registry.in_modes(self._modes))
        log.info("autonomous pool consuming", queues=len(self._queues))

    async def _unresponsive(self, agent: str, execution_id: str, strikes: int) -> None:
        """Restart the consumer of `agent` (its stuck attempt is cut short and its message
        goes back to the queue); after `max_restarts`, stop consuming it, mark the agent
        unavailable and the stuck execution failed."""
        patterns = await self._queues.cut(agent)
        if patterns is None:
            return
        if strikes <= self._max_restarts:
            log.error("restarting unresponsive consumer", agent=agent, restart=strikes, max_restarts=self._max_restarts)
            await self._queues.consume(agent, patterns)
            return
        reason = (
            f"its consumer stopped answering after {self._max_restarts} restarts (an attempt overran "
            "timeout_seconds and could not be stopped): fix the agent, then reload its file or restart the runner"
        )
        log.error("consumer given up, agent marked unavailable", agent=agent, execution_id=execution_id)
        self._registry.mark_unavailable(agent, reason)
        execution = await self._executions.get_execution(execution_id)
        if not execution.status.is_terminal:
            await self._endings.complete(ended(execution, ExecutionStatus.FAILED, ConsumerUnresponsiveError(reason)))

    async def stop(self, grace_seconds: float = 30.0) -> None:
        """Stop taking work; tasks in flight get `grace_seconds` to finish (SIGTERM drain);
        what is cut short goes back to the queue for another worker."""
        await self._watchdog.stop()
        subscriptions, self._subscriptions = self._subscriptions, []
        await asyncio.gather(
            self._queues.stop(grace_seconds), *(subscription.cancel(grace_seconds) for subscription in subscriptions)
        )
        if self._abandoned:  # attempts cut short (cancelled) that have not ended yet
            _, left = await asyncio.wait(set(self._abandoned), timeout=grace_seconds)
            if left:
                log.error("attempts still running after the drain, left behind", count=len(left))

    async def handle(self, agent: str, event: Event) -> None:
        """Run `agent` for an event of its queue to a terminal status."""
        with traced(event.trace_id, "autonomous"):
            await self._handle(agent, event)

    async def _handle(self, agent: str, event: Event) -> None:
        stream = False
        tenant = chain_tenant(event)  # events and chains
        version: int | None = None  # a chained event's execution is created now, on the current one
        if event.topic == invoke_topic(agent):
            execution_id = str(event.payload["execution_id"])
            stream = bool(event.payload.get("stream"))
            pinned = event.payload.get("agent_version")
            version = pinned if isinstance(pinned, int) and not isinstance(pinned, bool) else None
            tenant = str(event.payload["tenant"]) if event.payload.get("tenant") else None
        else:
            started = await start_for_event(
                self._executions, self._registry, agent, event, max_depth=self._max_chain_depth
            )
            if started is None:
                return
            execution_id = started
        if execution_id in self._in_hand:
            # A second event for an execution this process is running (the outbox's sweep
            # and a restart's resume both re-publish it): the first one finishes it.
            log.info("execution already running here, duplicate delivery dropped", execution_id=execution_id)
            self._dropped.add(execution_id)
            return
        self._in_hand.add(execution_id)
        try:
            with as_tenant(tenant):  # the run's tools (session memory) act within its tenant
                while await self._run_to_end(agent, execution_id, stream=stream, tenant=tenant, version=version):
                    if not await self._answered_meanwhile(execution_id):
                        break
        finally:
            self._in_hand.discard(execution_id)
            self._dropped.discard(execution_id)

    async def _answered_meanwhile(self, execution_id: str) -> bool:
        """True when the execution this process just paused was answered (queued again)
        before its handler let go of it: the answer's invocation may have been dropped as a
        duplicate, so the handler runs it again itself. Read again while a delivery was
        dropped during the read: the answer it carried may be newer than what was read."""
        while True:
            self._dropped.discard(execution_id)
            if (await self._executions.get_execution(execution_id)).status is ExecutionStatus.QUEUED:
                return True
            if execution_id not in self._dropped:
                return False

    async def _run_to_end(
        self, agent: str, execution_id: str, *, stream: bool, tenant: str | None, version: int | None = None
    ) -> bool:
        """Run the execution to a terminal status, or until it waits for a human (True), on
        `version` of its agent, the one it was created on (runtime/pinned_configs.py)."""
        try:
            if self._pinned is not None:
                config = await self._pinned.config(agent, version)
            else:
                config = self._registry.runnable(agent)
            if self._budgets is not None:
                await self._budgets.check(config, tenant)
        except AgentRunnerError as exc:
            execution = await self._executions.get_execution(execution_id)
            if execution.status.is_terminal:
                log.info("execution already finished, redelivery ignored", execution_id=execution_id)
                return False
            finished = ended(execution, ExecutionStatus.FAILED, exc)
            await self._endings.complete(finished)
        else:
            try:
                holder = f"{self._worker_id}:{execution_id}"  # a redelivery elsewhere waits for this lease
                slots = self._limits.held(config, holder, tenant) if self._limits else contextlib.nullcontext()
                async with slots as held:
                    finished, steps = await self._attempts.run(config, execution_id, stream=stream, held=held)
                    if finished.status is ExecutionStatus.WAITING_APPROVAL:
                        await self._endings.pause(finished)  # the slots go back, the message is acknowledged
                        return True
                    # Saved and announced before the slots go back (held a moment longer, never
                    # exceeded): whoever waits for the result does not wait for the release.
                    await self._endings.complete(finished, steps=steps, config=config)
            except NotStartable:
                log.info(
                    "execution already ended (finished, cancelled) or waits for a human, not run",
                    execution_id=execution_id,
                )
                return False
        registered = self._registry.agents.get(agent)
        if self._budgets is not None and finished.cost_usd and registered and registered.config:
            await self._budgets.after_run(registered.config, finished)
        return False

    async def _progress(self, execution: Execution, payload: dict[str, Any]) -> None:
        """Tell watchers (`GET /executions/{id}/events`) how the execution goes; best effort.
        A notice, not a confirmed publish: a watcher that misses one reads the journal and
        the end, which are recorded; most runs have no watcher, and the broker drops them."""
        await self._bus.notify(
            Event(
                topic=progress_topic(execution.agent, execution.execution_id),
                payload={"execution_id": execution.execution_id, **payload},
                trace_id=execution.trace_id,
            )
        )

    async def _attempt(
        self,
        config: AgentConfig,
        provider: LLMProvider,
        execution: Execution,
        *,
        stream: bool,
        records: list[ToolCallRecord],
        held: HeldSlots | None = None,
        journal: RunJournal | None = None,
        spent: Spend | None = None,
    ) -> Completion:
        """One attempt in a task of its own, so a cancel request can stop it alone; its
        tool calls are appended to `records` (and streamed to watchers) as they end, its
        model calls counted in `spent` as they are made. With
        `held`, each tool call first passes the fence of its concurrency slots (the model
        calls of `provider` already do). With `journal`, its steps are journaled and those
        an earlier run recorded are replayed."""

        offsets: dict[int, int] = {}  # characters streamed by model step: the pieces' positions

        async def text(piece: str) -> None:
            await self._progress(execution, text_progress(journal, offsets, piece))

        async def tool_call(record: ToolCallRecord) -> None:
            records.append(record)
            await self._progress(execution, {"kind": "tool_call", "tool_call": record.model_dump(mode="json")})

        sink = text if stream else None
        tools = self._tools.tools_for(config.name) if self._tools is not None else []
        if held is not None:
            tools = held.tools(tools)
        if config.execution_mode is ExecutionMode.CONTINUOUS:
            run = converse(
                config,
                provider,
                self._sessions,
                execution,
                on_text=sink,
                retry_base_seconds=self._llm_retry_base,
                tools=tools,
                on_tool_call=tool_call,
                max_history_bytes=self._max_history_bytes,
                journal=journal,
                on_model_call=spent.add if spent is not None else None,
                kept=partial(_passes_checks, config, execution, records),
            )
        else:
            context = ToolContext.serving(execution, session_id=execution.session_id)
            run = run_agent(
                config,
                provider,
                execution.input,
                on_text=sink,
                retry_base_seconds=self._llm_retry_base,
                tools=tools,
                context=context,
                on_tool_call=tool_call,
                journal=journal,
                on_model_call=spent.add if spent is not None else None,
            )
        # The run is the task itself (no wait_for inside it), so cancelling it twice never
        # orphans the coroutine: whoever waits for the task waits for the run.
        task: asyncio.Task[Completion] = asyncio.create_task(run)
        self._running[execution.execution_id] = task
        early = self._early_cancels.pop(execution.execution_id, None)
        if early is not None:  # asked before the attempt began: it never starts
            await self._on_cancel(early)
        try:
            with self._watchdog.attempt(config.name, execution.execution_id, config.timeout_seconds):
                done, _ = await asyncio.wait({task}, timeout=config.timeout_seconds)
                if not done:
                    task.cancel()
                    await asyncio.wait({task})  # a run that ignores the cancel holds here: the watchdog sees it
                    raise TimeoutError
                return task.result()  # a cancel request made it raise CancelledError
        except asyncio.CancelledError:
            request = self._cancelled.get(execution.execution_id)
            if request is not None and task.cancelled():
                raise CancelledByUser(request) from None
            task.cancel()  # shutting down, or a restart of a stuck consumer: stop the attempt too
            if not task.done():  # it may ignore the cancel; kept, so stop() can wait for it
                self._abandoned.add(task)
                task.add_done_callback(_forget_abandoned(self._abandoned))
            raise
        finally:
            self._running.pop(execution.execution_id, None)
            self._cancelled.pop(execution.execution_id, None)

    async def _on_cancel(self, event: Event) -> None:
        execution_id = str(event.payload.get("execution_id"))
        task = self._running.get(execution_id)
        if task is None:
            self._early_cancels[execution_id] = event
            return
        log.info("cancelling execution on request", execution_id=execution_id)
        self._cancelled[execution_id] = event
        task.cancel()


def _passes_checks(
    config: AgentConfig, execution: Execution, records: list[ToolCallRecord], completion: Completion
) -> bool:
    """Whether `completion`, as the end of `execution`, passes the online checks that would
    fail it (`on_check_failure: fail`); their final word is the end's (RunEndings)."""
    if config.on_check_failure != "fail" or not config.checks:
        return True
    answered = execution.model_copy(
        update={
            "status": ExecutionStatus.SUCCEEDED,
            "output": completion.text,
            "output_json": completion.output_json,
            "tool_calls": list(records),
            "cost_usd": completion.cost_usd,
            "finished_at": utcnow(),
        }
    )
    return checked(answered, config.checks, "fail").status is ExecutionStatus.SUCCEEDED


def _forget_abandoned(abandoned: set[asyncio.Task[Completion]]) -> Callable[[asyncio.Task[Completion]], None]:
    def forget(task: asyncio.Task[Completion]) -> None:
        abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("an attempt cut short ended later with an error", error=str(task.exception()))

    return forget
