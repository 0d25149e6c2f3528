"""The orchestrator: accepts invocations, records them, routes them to a pool, and
answers callers who wait for the result."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from agentrunner.domain.agent import AgentConfig, ExecutionMode
from agentrunner.domain.egress import EgressPolicy, check_webhook_url
from agentrunner.domain.errors import (
    BadRequestError,
    BudgetExceededError,
    ConflictError,
    ExecutionCancelledError,
    ExecutionNotFoundError,
    SessionBusyError,
    TopicReservedError,
)
from agentrunner.domain.event import Event, new_id
from agentrunner.domain.execution import (
    Execution,
    ExecutionError,
    ExecutionStatus,
    ReplayOf,
    slack_origin_of,
    utcnow,
)
from agentrunner.domain.exposed import check_input
from agentrunner.domain.steps import Step, reused_steps
from agentrunner.domain.tool_gates import ToolCallAnswer
from agentrunner.domain.topics import RESERVED_TOPIC_ROOTS, is_reserved_topic, topic_problem
from agentrunner.domain.webhook import WebhookDelivery
from agentrunner.logs import get_logger
from agentrunner.ports.bus import EventBus, Subscription
from agentrunner.ports.state import (
    ExecutionPage,
    ExecutionQueries,
    ExecutionStore,
    IdempotencyClaim,
    IdempotencyKeyTakenError,
    StepJournal,
    WebhookDeliveryStore,
)
from agentrunner.runtime.agent_queues import concurrently, queue_patterns
from agentrunner.runtime.budgets import Budgets
from agentrunner.runtime.conversation import new_session, session_of
from agentrunner.runtime.outbox import OutboxRelay
from agentrunner.runtime.pinned_configs import pinned_to
from agentrunner.runtime.registry import SERVED_MODES, AgentRegistry
from agentrunner.runtime.tool_answers import answer_tool_call
from agentrunner.runtime.topics import (
    FINISHED_PATTERN,
    TENANT_HEADER,
    WAITING_PATTERN,
    agent_queue,
    cancel_topic,
    finished_topic,
    invoke_topic,
    is_finished_topic,
    is_waiting_topic,
    orchestrator_queue,
)
from agentrunner.runtime.waits import Waiter, Waits
from agentrunner.runtime.watchers import ExecutionWatchers
from agentrunner.tracing import current_tenant, current_trace_id, new_trace_id

log = get_logger(__name__)

# Executions no worker holds, which a cancel ends at once, and what their error says.
_CANCELLED_BEFORE = {
    ExecutionStatus.QUEUED: "cancelled on request before it started",
    ExecutionStatus.WAITING_APPROVAL: "cancelled on request while it waited for a human before a tool call",
}
_NOT_RUNNING = frozenset(_CANCELLED_BEFORE)


class Orchestrator:
    """Entry point of every invocation (ARCHITECTURE §3)."""

    def __init__(
        self,
        *,
        bus: EventBus,
        executions: ExecutionStore,
        queries: ExecutionQueries,
        deliveries: WebhookDeliveryStore,
        relay: OutboxRelay,
        registry: AgentRegistry,
        node_id: str,
        webhooks_signed: bool = False,
        budgets: Budgets | None = None,
        egress: EgressPolicy | None = None,
        steps: StepJournal | None = None,
    ) -> None:
        self._steps = steps
        self._bus = bus
        self._egress = egress or EgressPolicy()
        self._budgets = budgets
        self._webhooks_signed = webhooks_signed
        self._executions = executions
        self._queries = queries
        self._deliveries = deliveries
        self._relay = relay
        self._registry = registry
        self._node_id = node_id
        self._waits = Waits()
        self.watchers = ExecutionWatchers(
            bus=bus,
            queue=orchestrator_queue(node_id),
            executions=executions,
            steps=self.steps,
            journaled=steps is not None,
        )
        self._subscription: Subscription | None = None
        self._declared: set[str] = set()  # agents whose queue this process has declared

    @property
    def registry(self) -> AgentRegistry:
        """The agents this orchestrator routes to."""
        return self._registry

    @property
    def _queue(self) -> str:
        return orchestrator_queue(self._node_id)

    async def start(self) -> None:
        """Listen for executions that ended or wait for a human, to wake callers that wait
        (and for the progress of executions somebody watches, bound while they watch)."""
        self._subscription = await self._bus.subscribe(
            self._queue,
            [FINISHED_PATTERN, WAITING_PATTERN],
            self._on_finished,
            prefetch=1,  # in order: streamed text must reach watchers as it was written
            exclusive=True,
        )

    async def _queue_declared(self, config: AgentConfig) -> None:
        """An agent a reload under way has just listed gets its queue declared before its
        first invocation is accepted, or that invocation would be routed nowhere."""
        if config.name not in self._declared and config.execution_mode in SERVED_MODES:
            await self._bus.declare(agent_queue(config.name), sorted(queue_patterns(config)))
            self._declared.add(config.name)

    async def declare_queues(self) -> None:
        """Declare the queue of every available agent, bound to its invocations and its
        event subscriptions, so work accepted before (or while) a pool subscribes waits in
        the queue instead of being routed nowhere."""
        await concurrently([self._declare(config) for config in self._registry.in_modes(SERVED_MODES)])

    async def _declare(self, config: AgentConfig) -> None:
        await self._bus.declare(agent_queue(config.name), sorted(queue_patterns(config)))
        self._declared.add(config.name)

    async def stop(self) -> None:
        """Stop listening; callers still waiting get the execution as it stands."""
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None
        self._waits.cancel_all()

    async def invoke(
        self,
        agent: str,
        task_data: dict[str, Any],
        *,
        session_id: str | None = None,
        wait: float = 0.0,
        stream: bool = False,
        webhook_url: str | None = None,
        origin: dict[str, Any] | None = None,
        with_events: Callable[[Execution], Sequence[Event]] | None = None,
        idempotency: IdempotencyClaim | None = None,
        replay: tuple[ReplayOf, Sequence[Step]] | None = None,
    ) -> Execution:
        """Accept a task for `agent` and return its execution: finished if it ended within
        `wait` seconds, waiting if it stopped for a human before a tool call by then (nothing
        happens until one answers), else as it stands (queued or running).

        `with_events`: events about this execution (see `event`) recorded in the same
        transaction as it and published with its invocation: accepted means they go out too,
        at the cost of no further round trip.

        `idempotency`: the caller's `Idempotency-Key`, recorded with the execution. When an
        earlier invocation holds it, nothing is accepted and `IdempotencyKeyTakenError` names
        the earlier one (also instead of a refusal: a retry of an accepted invocation is
        answered with it, whatever the budget or the session say now).

        `origin`: where the request came from, set by the platform's own gateways (the Slack
        gateway's `{"kind": "slack", ...}`), never from task_data: only it makes an answer
        go back to Slack.

        `replay`: the execution this one replays and that execution's journal, whose steps it
        starts with (`runtime/replays.py`).

        Raises `AgentNotFoundError` or `AgentUnavailableError` before accepting anything,
        `InputInvalidError` for task_data its agent's input_schema refuses,
        `EgressRefusedError` for a webhook_url the egress policy refuses outright.
        """
        config = self._registry.runnable(agent)
        if replay is None:  # a replay runs its source's input again, as it was accepted
            check_input(config, task_data)
        await self._queue_declared(config)
        tenant = current_tenant()
        if self._budgets is not None:
            async with self._unless_a_retry(idempotency):
                await self._budgets.check(config, tenant)  # refused: nothing recorded
        if webhook_url and not self._webhooks_signed:
            raise BadRequestError("webhook_url needs WEBHOOK_SECRET to be set: webhooks are never sent unsigned")
        if webhook_url:
            check_webhook_url(webhook_url, self._egress)
        execution = Execution(
            execution_id=new_id(),
            agent=config.name,
            input=task_data,
            session_id=session_id or new_session(config, slack_origin_of(origin)),  # never a shared default
            trace_id=current_trace_id() or new_trace_id(),
            webhook_url=webhook_url or config.webhook_url,
            tenant=tenant,
            origin=origin,
            replay_of=replay[0] if replay else None,
            agent_version=self._registry.version_of(config.name),
        )
        if config.execution_mode is ExecutionMode.CONTINUOUS and config.continuous_config is not None:
            policy = config.continuous_config.on_busy
            if idempotency is not None and policy in ("interrupt", "rollback"):
                await self._raise_if_taken(idempotency)  # a retry must not cancel its own original
            async with self._unless_a_retry(idempotency):
                await self._on_busy(config.name, policy, session_of(execution), tenant)
        waiter = self._waits.add(execution.execution_id, human_ends_it=True) if wait > 0 else None
        invocation = Event(
            topic=invoke_topic(config.name),
            # The version travels with the invocation: a redelivery after a reload runs on it.
            payload={"execution_id": execution.execution_id, "stream": stream}
            | ({"tenant": tenant} if tenant else {})
            | pinned_to(execution),
            trace_id=execution.trace_id,
        )
        events = [invocation, *(with_events(execution) if with_events is not None else ())]
        # A replay's reused steps go with the execution, in its transaction: its first run
        # finds them as soon as it can run, and a refused acceptance leaves none behind.
        reused = reused_steps(replay[1], replay[0].from_step, execution.execution_id) if replay is not None else []
        try:
            # Recorded with its events (and key) in one transaction: accepted means it will run,
            # so the caller is answered without waiting for the broker's confirms (the relay
            # publishes them now, its sweep later if that fails). A continuous session's
            # messages are published before the answer: the next one cannot overtake it.
            await self._executions.create_execution(execution, events=events, idempotency=idempotency, steps=reused)
            if config.execution_mode is ExecutionMode.CONTINUOUS:
                await self._relay.deliver(events)
            else:
                self._relay.deliver_soon(events)
            log.info("execution accepted", execution_id=execution.execution_id, agent=config.name)
            if waiter is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(waiter), timeout=wait)
        finally:
            if waiter is not None:
                self._waits.forget(execution.execution_id, waiter)
        if waiter is None:
            return execution  # wait 0: accepted, answered at once, whatever happens next
        return await self._as_waited(execution.execution_id, waiter)

    @contextlib.asynccontextmanager
    async def _unless_a_retry(self, idempotency: IdempotencyClaim | None) -> AsyncIterator[None]:
        """A refusal (budget, busy session) of a retry of an accepted invocation becomes
        `IdempotencyKeyTakenError`: the retry is answered with the invocation it repeats."""
        try:
            yield
        except (BudgetExceededError, SessionBusyError):
            if idempotency is not None:
                await self._raise_if_taken(idempotency)
            raise

    async def _raise_if_taken(self, idempotency: IdempotencyClaim) -> None:
        earlier = await self._queries.keyed_invocation(idempotency.key, expired_before=idempotency.expired_before)
        if earlier is not None:
            raise IdempotencyKeyTakenError(earlier)

    async def wait_for(self, execution_id: str, wait: float, *, human_ends_it: bool = False) -> Execution:
        """The execution once it has ended, or as it stands after `wait` seconds; with
        `human_ends_it`, also once it waits for a human (`waiting_approval`), as an
        invocation's own wait does (a retried invocation is answered as its original was).
        Raises `ExecutionNotFoundError`."""
        if wait <= 0:
            return await self.execution(execution_id)
        waiter = self._waits.add(execution_id, human_ends_it=human_ends_it)  # before the read: no end falls between
        try:
            execution = await self.execution(execution_id)
            if execution.status.is_terminal or (human_ends_it and execution.status is ExecutionStatus.WAITING_APPROVAL):
                return execution
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(waiter), timeout=wait)
        finally:
            self._waits.forget(execution_id, waiter)
        return await self._as_waited(execution_id, waiter)

    async def _as_waited(self, execution_id: str, waiter: Waiter) -> Execution:
        if waiter.done() and not waiter.cancelled() and (finished := waiter.result()) is not None:
            return finished  # as stored when its finished event came
        return await self.execution(execution_id)

    async def _on_busy(self, agent: str, policy: str, session: str, tenant: str | None = None) -> None:
        """Apply a continuous agent's `on_busy` to the earlier messages of `session` that are
        still queued, running or waiting for a human before a tool call (enqueue: nothing;
        the queue keeps them in order)."""
        if policy == "enqueue":
            return
        busy = [
            execution
            for status in (ExecutionStatus.RUNNING, ExecutionStatus.QUEUED, ExecutionStatus.WAITING_APPROVAL)
            for execution in (
                await self._queries.list_executions(agent=agent, status=status, limit=500, tenant=tenant)
            ).items  # sessions are per tenant
            if session_of(execution) == session
        ]
        if not busy:
            return
        if policy == "reject":
            raise SessionBusyError(
                f"session {session!r} of {agent!r} is still answering execution {busy[0].execution_id}: "
                "send the next message when it has finished (continuous_config.on_busy: reject)",
                agent=agent,
                session_id=session,
                busy=[execution.execution_id for execution in busy],
            )
        message = f"interrupted by a newer message in its session (on_busy: {policy})"
        for execution in busy:
            with contextlib.suppress(ConflictError):  # it ended meanwhile
                await self.cancel(execution.execution_id, reason=policy, message=message)

    async def webhook_delivery(self, execution: Execution) -> WebhookDelivery | None:
        """The delivery of `execution`'s record to its webhook (none before it ends)."""
        return await self._deliveries.get_webhook_delivery(execution.execution_id)

    def event(self, topic: str, payload: dict[str, Any]) -> Event:
        """An event of the caller's trace and tenant, not yet published (any topic: the
        platform's own parts, such as the Slack gateway, use it for theirs).
        Raises `BadRequestError` for a topic that is not dot-separated words."""
        problem = topic_problem(topic)
        if problem:
            raise BadRequestError(f"invalid topic: {problem}")
        tenant = current_tenant()
        return Event(
            topic=topic,
            payload=payload,
            trace_id=current_trace_id() or new_trace_id(),
            headers={TENANT_HEADER: tenant} if tenant else {},
        )

    async def publish_event(self, topic: str, payload: dict[str, Any]) -> Event:
        """Publish a caller's event (`POST /events`); agents whose `event_subscriptions`
        match it run, counted for the caller's tenant. Raises `BadRequestError` for a topic
        that is not dot-separated words, `TopicReservedError` for one of the platform's own
        (`RESERVED_TOPIC_ROOTS`): a caller never writes the control plane."""
        if is_reserved_topic(topic):
            raise TopicReservedError(
                f"topic {topic!r} is reserved for agentrunner itself (topics under "
                f"{', '.join(RESERVED_TOPIC_ROOTS)}): publish under a root of your own, e.g. 'orders.created'",
                topic=topic[:200],
            )
        return await self.announce(topic, payload)

    async def announce(self, topic: str, payload: dict[str, Any]) -> Event:
        """Publish an event of the platform itself (the Slack gateway's commands, events and
        answers), reserved topics included: never on a caller's say-so.
        Raises `BadRequestError` for a topic that is not dot-separated words."""
        event = self.event(topic, payload)
        await self._bus.publish(event)
        log.info("event published", topic=topic, event_id=event.event_id)
        return event

    async def cancel(self, execution_id: str, *, reason: str | None = None, message: str | None = None) -> Execution:
        """Cancel an execution: a queued one, or one waiting for a human, at once (it will not
        run), a running one by
        asking its worker to stop it (`reason` and `message` travel with the request).
        Raises `ExecutionNotFoundError`, or `ConflictError` when it already ended."""
        execution = await self._executions.get_execution(execution_id)
        if execution.status.is_terminal:
            raise ConflictError(
                f"execution {execution_id} already ended ({execution.status.value}): nothing to cancel",
                execution_id=execution_id,
            )
        if execution.status in _NOT_RUNNING:  # no worker holds it: it ends here
            cancelled = execution.model_copy(
                update={
                    "status": ExecutionStatus.CANCELLED,
                    "finished_at": utcnow(),
                    "error": ExecutionError(
                        code=ExecutionCancelledError.code, message=message or _CANCELLED_BEFORE[execution.status]
                    ),
                }
            )
            finished = Event(
                topic=finished_topic(execution.agent),
                payload={"execution_id": execution_id, "status": ExecutionStatus.CANCELLED.value},
                trace_id=execution.trace_id,
            )
            try:
                await self._executions.save_execution(
                    cancelled, events=[finished], only_if=frozenset({execution.status})
                )
            except ConflictError:
                # a worker started it meanwhile: stop it there
                return await self.cancel(execution_id, reason=reason, message=message)
            await self._relay.deliver([finished])
            log.info("execution cancelled before it ran", execution_id=execution_id)
            return cancelled
        request: dict[str, Any] = {"execution_id": execution_id}
        if reason:
            request |= {"reason": reason, "message": message}
        await self._bus.publish(
            Event(topic=cancel_topic(execution.agent), payload=request, trace_id=execution.trace_id)
        )
        log.info("cancel requested", execution_id=execution_id)
        return execution

    async def answer_tool_call(
        self, execution: Execution, answer: ToolCallAnswer, *, events: Sequence[Event] = ()
    ) -> Execution:
        """Answer the tool call `execution` waits on and queue it again, `events` published
        with the answer (runtime/tool_answers.py). Raises `ConflictError` when it does not
        wait on a call this answer answers."""
        return await answer_tool_call(self._executions, self._relay, execution, answer, events=events)

    async def execution(self, execution_id: str) -> Execution:
        """The execution with that id (raises `ExecutionNotFoundError`)."""
        return await self._executions.get_execution(execution_id)

    async def steps(self, execution: Execution) -> list[Step]:
        """The journal of `execution`'s model and tool calls, by generation then seq (empty
        without a journal)."""
        return await self._steps.steps(execution.execution_id) if self._steps is not None else []

    async def executions(
        self,
        *,
        agent: str | None,
        status: ExecutionStatus | None,
        limit: int,
        cursor: str | None,
        tenant: str | None = None,
        agent_version: int | None = None,
    ) -> ExecutionPage:
        """A page of executions (of `tenant` when given; on `agent_version` of `agent` when
        given), newest first."""
        return await self._queries.list_executions(
            agent=agent, status=status, limit=limit, cursor=cursor, tenant=tenant, agent_version=agent_version
        )

    async def _on_finished(self, event: Event) -> None:
        execution_id = str(event.payload.get("execution_id"))
        self.watchers.wake(execution_id, event)
        ended = is_finished_topic(event.topic)
        if not ended and not is_waiting_topic(event.topic):
            return
        waiters = self._waits.woken(execution_id, ended=ended)
        carried = event.payload.get("execution")
        claims_cost = ended and isinstance(carried, dict) and bool(carried.get("cost_usd"))
        if not waiters and not (self._budgets is not None and claims_cost):
            return
        # The event only says "look": what a waiter gets and what a budget counts is the
        # execution as stored (its status, cost and tenant), never what a payload claims,
        # so a forged `execution.finished` answers nobody and spends nothing.
        try:
            stored = await self._executions.get_execution(execution_id)
        except ExecutionNotFoundError:
            log.warning("event for an unknown execution ignored", topic=event.topic, execution_id=execution_id[:64])
            return
        if not ended:  # a wait ends where a human is needed: nothing happens until one answers
            if stored.status is ExecutionStatus.WAITING_APPROVAL:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(stored)
            return  # else answered meanwhile: it runs on
        if not stored.status.is_terminal:
            log.warning("finished event for an execution still running ignored", execution_id=execution_id)
            return
        if self._budgets is not None and stored.cost_usd:
            self._budgets.spent(stored.agent, stored.tenant, stored.execution_id, stored.cost_usd)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(stored)
