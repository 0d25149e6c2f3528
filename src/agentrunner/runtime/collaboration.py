"""The collaborative pool: drives the plan runs of collaborative agents.

It consumes the queues of collaborative agents (`invoke.<agent>`, and their event subscriptions).
A run is keyed to the execution that started it: planned by the coordinating agent's model, held
for approval if asked, then its steps run in dependency order, independent ones together, each as
an execution of its agent through the bus and that agent's pool, with a deterministic id (run,
step, attempt). The run is saved after every step, so a worker killed at any point resumes from
the last finished step when the message comes back (RabbitMQ redelivers it; the embedded node re-
publishes unfinished executions at start): a step that was running is found by its execution id,
never run twice. A step's agent may ask a human (`ask_human`): the step, then the run, pause
durably until the answer (runtime/plan_runs.py) or the clarification timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial

from agentrunner.background import every
from agentrunner.domain.agent import AgentConfig, ExecutionMode
from agentrunner.domain.errors import (
    AgentRunnerError,
    ConflictError,
    ExecutionCancelledError,
    LLMError,
    OutputInvalidError,
    PlanInvalidError,
)
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionError, ExecutionStatus, utcnow
from agentrunner.domain.llm import Spend
from agentrunner.domain.plan import (
    ClarificationStatus,
    PlanRun,
    PlanRunStatus,
    StepRun,
    StepStatus,
)
from agentrunner.logs import get_logger
from agentrunner.ports.bus import EventBus, Subscription
from agentrunner.ports.metrics import Metrics
from agentrunner.ports.providers import ProviderCatalog
from agentrunner.ports.state import ExecutionStore, PlanRunStore
from agentrunner.ports.tools import ToolCatalog
from agentrunner.runtime.agent_queues import AgentQueues
from agentrunner.runtime.agent_run import COLLABORATION_KEY
from agentrunner.runtime.budgets import Budgets
from agentrunner.runtime.chains import start_for_event
from agentrunner.runtime.outbox import OutboxRelay
from agentrunner.runtime.pinned_configs import PinnedConfigs, pinned_to
from agentrunner.runtime.plan_runs import Change, PlanRuns, planned_steps, step_version
from agentrunner.runtime.plan_steps import (
    cancelled_error,
    ending,
    failed_by_step,
    paused,
    ready_steps,
    spent,
    started,
    step_finished,
    step_task,
)
from agentrunner.runtime.planner import make_plan, participants, synthesize
from agentrunner.runtime.registry import AgentRegistry
from agentrunner.runtime.remote_steps import remote_collaborator, remote_step
from agentrunner.runtime.topics import (
    CANCEL_PATTERN,
    CLARIFICATION_ANSWERED_PATTERN,
    COLLABORATIVE_ANSWERS_QUEUE,
    FINISHED_PATTERN,
    WAITING_PATTERN,
    cancel_topic,
    cancelled_agent,
    collaborative_finished_queue,
    invoke_topic,
    plan_approval_requested_topic,
)
from agentrunner.tracing import as_tenant, traced

log = get_logger(__name__)

COLLABORATIVE_POOL_MODES = frozenset({ExecutionMode.COLLABORATIVE})


class CollaborativePool:
    """Drives plan runs from the collaborative agents' queues (see the module docstring);
    more processes of the pool share the runs."""

    def __init__(
        self,
        *,
        bus: EventBus,
        executions: ExecutionStore,
        run_store: PlanRunStore,
        registry: AgentRegistry,
        catalog: ProviderCatalog,
        relay: OutboxRelay,
        plan_runs: PlanRuns,
        worker_id: str,
        prefetch: int = 10,
        poll_seconds: float = 2.0,
        sweep_seconds: float = 5.0,
        llm_retry_base_seconds: float = 0.5,
        max_chain_depth: int = 5,
        budgets: Budgets | None = None,
        metrics: Metrics | None = None,
        pinned: PinnedConfigs | None = None,
        tools: ToolCatalog | None = None,  # the A2A tools a plan's steps may name
    ) -> None:
        self._pinned, self._tools = pinned, tools
        self._bus = bus
        self._metrics = metrics
        self._executions = executions
        self._run_store = run_store
        self._registry = registry
        self._catalog = catalog
        self._relay = relay
        self._runs = plan_runs
        self._worker_id = worker_id
        self._poll = poll_seconds
        self._sweep_seconds = sweep_seconds
        self._retry_base = llm_retry_base_seconds
        self._max_chain_depth = max_chain_depth
        self._budgets = budgets
        self._subscriptions: list[Subscription] = []
        self._queues = AgentQueues(bus=bus, handler=self.handle, prefetch=prefetch)
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._driving: dict[str, asyncio.Event] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Consume the collaborative agents' queues, step completions and answers from the
        bus; settle unanswered questions past their timeout."""
        self._subscriptions.append(
            await self._bus.subscribe(
                collaborative_finished_queue(self._worker_id),
                [FINISHED_PATTERN, CANCEL_PATTERN, WAITING_PATTERN],
                self._on_finished,
                prefetch=50,
                exclusive=True,
            )
        )
        self._subscriptions.append(
            await self._bus.subscribe(
                COLLABORATIVE_ANSWERS_QUEUE, [CLARIFICATION_ANSWERED_PATTERN], self._on_answered, prefetch=4
            )
        )
        await self.sync()
        self._sweeper = every(
            self._sweep_seconds, self._settle_logged, task="clarification-timeouts", metrics=self._metrics
        )

    async def sync(self) -> None:
        """Consume exactly the queues of the available collaborative agents."""
        await self._queues.sync(self._registry.in_modes(COLLABORATIVE_POOL_MODES))
        log.info("collaborative pool consuming", queues=len(self._queues))

    async def stop(self, grace_seconds: float = 30.0) -> None:
        """Stop taking work; runs in flight get `grace_seconds`, then go back to the queue."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        subscriptions, self._subscriptions = self._subscriptions, []
        await asyncio.gather(
            self._queues.stop(grace_seconds), *(subscription.cancel(grace_seconds) for subscription in subscriptions)
        )

    async def handle(self, agent: str, event: Event) -> None:
        """Drive the run an event of `agent`'s queue starts or resumes, until it ends or
        pauses. Raises only what should bring the event back (the database is down)."""
        with traced(event.trace_id, "collaborative"):
            if event.topic == invoke_topic(agent):
                execution_id = str(event.payload["execution_id"])
            else:
                # The run, its steps and its output keep the event's tenant and chain depth.
                started = await start_for_event(
                    self._executions, self._registry, agent, event, max_depth=self._max_chain_depth
                )
                if started is None:
                    return
                execution_id = started
            # One driver per run in this process: a resume that arrives while the driver
            # that paused the run is still returning waits for it, then drives afresh.
            while (busy := self._driving.get(execution_id)) is not None:
                await busy.wait()
            done = self._driving[execution_id] = asyncio.Event()
            try:
                await self._drive(agent, execution_id)
            finally:
                del self._driving[execution_id]
                done.set()

    async def _drive(self, agent: str, execution_id: str) -> None:
        execution = await self._executions.get_execution(execution_id)
        run = await self._run_for(execution)
        if run.status.is_terminal:
            await self._runs.finish_execution(run)  # a crash between the two saves
            return
        if execution.status.is_terminal:  # cancelled on request
            await self._runs.update(run, partial(ending, PlanRunStatus.CANCELLED, cancelled_error(execution), None))
            return
        try:
            # A run resumed after a reload goes on with the version it started on.
            if self._pinned is not None:
                config = await self._pinned.config(agent, execution.agent_version)
            else:
                config = self._registry.runnable(agent)
            if self._budgets is not None and run.status is PlanRunStatus.PLANNING:
                await self._budgets.check(config, execution.tenant)  # the invoking tenant's, too
        except AgentRunnerError as exc:
            await self._runs.update(run, partial(ending, PlanRunStatus.FAILED, exc, None))
            return
        if run.status.is_paused:
            return
        llm = config.llm_config
        try:
            await self._executions.start_execution(
                execution_id, worker=self._worker_id, provider=llm.provider.value, model=llm.model
            )
        except ConflictError:
            return
        # The run is the invoking tenant's work: the planner's model calls, and the steps
        # it starts (their executions carry the tenant), count against its limits.
        with as_tenant(execution.tenant):
            if run.status is PlanRunStatus.PLANNING:
                run = await self._plan(config, run)
            if run.status is PlanRunStatus.RUNNING:
                await self._execute(config, run, execution)

    async def _run_for(self, execution: Execution) -> PlanRun:
        """The run of `execution`, created on its first delivery."""
        with contextlib.suppress(AgentRunnerError):
            return await self._run_store.get_plan_run(execution.execution_id)
        task = execution.input
        # Questions go to Slack only for runs the Slack gateway started (never for task_data
        # that merely looks like a Slack request).
        slack = execution.slack_origin
        origin = {**slack, "source": "slack"} if slack is not None else None
        run = PlanRun(
            id=execution.execution_id,
            agent=execution.agent,
            task=task,
            origin=origin,
            trace_id=execution.trace_id,
            tenant=execution.tenant,  # the owner: who may read, approve and answer it
        )
        try:
            created = await self._run_store.create_plan_run(run)
        except ConflictError:
            return await self._run_store.get_plan_run(execution.execution_id)
        log.info("plan run created", run_id=run.id, agent=run.agent)
        return created

    async def _plan(self, config: AgentConfig, run: PlanRun) -> PlanRun:
        spend = Spend()
        try:
            team = participants(config, self._registry)
            plan = await make_plan(config, self._catalog, run.task, team, spend, retry_base_seconds=self._retry_base)
        except (PlanInvalidError, LLMError) as exc:
            log.warning("planning failed", run_id=run.id, error=exc.message)
            return await self._runs.update(run, partial(ending, PlanRunStatus.FAILED, exc, spend))
        collaborative = config.collaborative_config
        held = bool(collaborative and collaborative.require_plan_approval)
        # Each step runs on the version of its agent the planner was shown (every attempt,
        # whatever reload comes before it starts): the run's team is pinned with its plan.
        steps = planned_steps(plan, self._registry)

        def planned(current: PlanRun) -> Change:
            if current.status is not PlanRunStatus.PLANNING:
                return current, []
            status = PlanRunStatus.AWAITING_APPROVAL if held else PlanRunStatus.RUNNING
            changed = spent(current, spend).model_copy(update={"plan": plan, "steps": steps, "status": status})
            events = []
            if held:
                payload = {"run_id": current.id, "agent": current.agent, "plan": plan.model_dump(mode="json")}
                topic = plan_approval_requested_topic(current.id)
                events.append(Event(topic=topic, payload=payload, trace_id=current.trace_id))
            return changed, events

        saved = await self._runs.update(run, planned)
        log.info("plan made", run_id=run.id, steps=len(plan.steps), held_for_approval=held)
        return saved

    async def _execute(self, config: AgentConfig, run: PlanRun, execution: Execution) -> None:
        """Run the steps until all succeed (then synthesise), one fails, or the run pauses."""
        collaborative = config.collaborative_config
        allow = collaborative.allow_human_clarification if collaborative else True
        timeout = collaborative.clarification_timeout_seconds if collaborative else 3600.0
        run = await self._run_steps(run, execution, allow=allow, question_timeout=timeout)
        if run.status is not PlanRunStatus.RUNNING:
            return
        spend = Spend()
        try:
            answer = await synthesize(config, self._catalog, run, spend, retry_base_seconds=self._retry_base)
        except (LLMError, OutputInvalidError) as exc:
            await self._runs.update(run, partial(ending, PlanRunStatus.FAILED, exc, spend))
            return
        result = {"result": answer.text, "result_json": answer.output_json}  # parsed: it followed output_schema
        await self._runs.update(run, partial(ending, PlanRunStatus.SUCCEEDED, None, spend, **result))

    async def _run_steps(self, run: PlanRun, owner: Execution, *, allow: bool, question_timeout: float) -> PlanRun:
        """Start ready steps and record their outcomes until every step succeeded (the run
        is returned still running), or the run failed or paused."""
        watched: dict[asyncio.Task[Execution], str] = {}
        try:
            while True:
                if run.status is not PlanRunStatus.RUNNING:
                    return run
                if any(step.status is StepStatus.FAILED for step in run.steps):
                    return await self._runs.update(run, failed_by_step)
                if all(step.status is StepStatus.SUCCEEDED for step in run.steps):
                    return run
                ready = ready_steps(run)
                if ready:
                    run = await self._runs.update(run, partial(started, ready))
                    continue
                self._watch_running(run, owner, watched, allow)
                if not watched:
                    run = await self._runs.update(run, paused)
                    if run.status is PlanRunStatus.RUNNING:  # an answer came meanwhile: look again
                        await asyncio.sleep(self._poll)
                        run = await self._run_store.get_plan_run(run.id)
                    continue
                finished, _ = await asyncio.wait(watched, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED)
                if not finished:  # answers, timeouts and other writers meanwhile
                    run = await self._run_store.get_plan_run(run.id)
                    continue
                for task in finished:
                    step_id = watched.pop(task)
                    outcome = partial(step_finished, step_id, task.result(), allow=allow, timeout=question_timeout)
                    run = await self._runs.update(run, outcome)
        finally:
            _stop_watching(watched, run.id)

    def _watch_running(
        self, run: PlanRun, owner: Execution, watched: dict[asyncio.Task[Execution], str], allow: bool
    ) -> None:
        """Watch every running step not watched yet (all of them after a resume)."""
        for step in run.steps:
            if step.status is StepStatus.RUNNING and step.step_id not in watched.values():
                watched[asyncio.create_task(self._step_result(run, owner, step, allow))] = step.step_id

    async def _step_result(self, run: PlanRun, owner: Execution, step: StepRun, allow: bool) -> Execution:
        """The step's execution once it ended, as stored: created (with its invocation)
        unless it exists, as after a resume; its `execution.finished` only says when to read
        it (a payload is never taken as the result). The step counts for the run's tenant
        (`owner`: the run's execution) and keeps its chain depth."""
        assert step.execution_id is not None
        if (remote := remote_collaborator(self._registry, self._tools, run, step)) is not None:
            return await remote_step(self._executions, remote, run, owner, step, allow=allow)
        try:
            self._registry.runnable(step.agent)
        except AgentRunnerError as exc:  # removed or broken since the plan was made
            await self._fail_unstarted(run, step, exc)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[step.execution_id] = waiter
        try:
            execution = Execution(
                execution_id=step.execution_id,
                agent=step.agent,
                input=step_task(run, step, allow),
                trace_id=run.trace_id,
                tenant=owner.tenant,
                chain_depth=owner.chain_depth,
                agent_version=step_version(step, self._registry),
            )
            request = (
                {"execution_id": step.execution_id}
                | ({"tenant": owner.tenant} if owner.tenant else {})
                | pinned_to(execution)
            )
            invocation = Event(topic=invoke_topic(step.agent), payload=request, trace_id=run.trace_id)
            try:
                await self._executions.create_execution(execution, events=[invocation])
            except ConflictError:
                pass  # started before a resume: it runs, or ran, already
            else:
                await self._relay.deliver([invocation])
                log.info("step started", run_id=run.id, step_id=step.step_id, agent=step.agent, attempt=step.attempts)
            while True:
                stored = await self._executions.get_execution(step.execution_id)
                if stored.status.is_terminal or stored.status is ExecutionStatus.WAITING_APPROVAL:
                    return stored  # ended, or paused before a tool call: the step waits with it
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), self._poll)
                waiter = self._waiters[step.execution_id] = asyncio.get_running_loop().create_future()
        finally:
            self._waiters.pop(step.execution_id, None)

    async def _fail_unstarted(self, run: PlanRun, step: StepRun, error: AgentRunnerError) -> None:
        """Record the step's execution as failed, unless it exists (started before)."""
        assert step.execution_id is not None
        failed = Execution(
            execution_id=step.execution_id,
            agent=step.agent,
            status=ExecutionStatus.FAILED,
            input=step_task(run, step, False),
            error=ExecutionError(code=error.code, message=error.message),
            trace_id=run.trace_id,
            agent_version=step.agent_version,
            finished_at=utcnow(),
        )
        with contextlib.suppress(ConflictError):
            await self._executions.create_execution(failed)

    async def _on_finished(self, event: Event) -> None:
        agent = cancelled_agent(event.topic)
        if agent is not None:
            await self._cancel(agent, str(event.payload.get("execution_id")))
            return
        execution_id = str(event.payload.get("execution_id"))
        waiter = self._waiters.get(execution_id)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)  # a wake-up: the step's result (or pause) is read from the store
            return
        # Not watched here: maybe a step whose paused run waits on it, answered and now ended.
        execution = event.payload.get("execution")
        task = execution.get("input") if isinstance(execution, dict) else None
        context = task.get(COLLABORATION_KEY) if isinstance(task, dict) else None
        if isinstance(context, dict) and isinstance(run_id := context.get("run_id"), str):
            try:
                await self._runs.resume_step_of(run_id, execution_id)
            except AgentRunnerError as exc:
                if exc.retryable:
                    raise
                log.warning("answered step not resumed at once", run_id=run_id, error=exc.message)

    async def _cancel(self, agent: str, execution_id: str) -> None:
        """A cancel request for a collaborative execution: its run ends cancelled (every
        replica hears it; the first save wins) and its running steps are asked to stop."""
        registered = self._registry.agents.get(agent)
        if registered is None or registered.config is None:
            return
        if registered.config.execution_mode is not ExecutionMode.COLLABORATIVE:
            return
        try:
            run = await self._run_store.get_plan_run(execution_id)
        except AgentRunnerError:
            return
        if run.status.is_terminal:
            return
        stop = ExecutionCancelledError("cancelled on request")
        run = await self._runs.update(run, partial(ending, PlanRunStatus.CANCELLED, stop, None))
        for step in run.steps:
            if step.status is StepStatus.RUNNING and step.execution_id:
                payload = {"execution_id": step.execution_id}
                await self._bus.publish(Event(topic=cancel_topic(step.agent), payload=payload, trace_id=run.trace_id))
        log.info("plan run cancelled on request", run_id=run.id)

    async def _on_answered(self, event: Event) -> None:
        """An answer from the bus (a Slack button): the same path as the API's."""
        payload = event.payload
        try:
            await self._runs.answer(
                str(payload.get("run_id")),
                str(payload.get("clarification_id")),
                str(payload.get("answer", "")),
                answered_by=str(payload["answered_by"]) if payload.get("answered_by") else None,
            )
        except AgentRunnerError as exc:
            if exc.retryable:
                raise
            log.warning("answer from the bus not taken", run_id=payload.get("run_id"), error=exc.message)

    async def _settle_logged(self) -> None:
        try:
            await self.settle_late_questions()
        except AgentRunnerError as exc:
            log.warning("clarification timeouts not checked", error=exc.message)

    async def settle_late_questions(self) -> None:
        """Settle every question unanswered past its timeout (default taken, or the run
        fails), and resume the steps whose tool call was answered (their execution was
        approved, denied or answered: it no longer waits). No timeout applies to a step
        waiting before a tool call: its execution waits as long as any does."""
        now = utcnow()
        for status in (PlanRunStatus.NEEDS_CLARIFICATION, PlanRunStatus.WAITING_APPROVAL, PlanRunStatus.RUNNING):
            for listed in await self._run_store.list_plan_runs(status=status, limit=500):
                run = listed
                if any(
                    c.status is ClarificationStatus.PENDING and c.expires_at is not None and c.expires_at <= now
                    for c in run.clarifications
                ):
                    run = await self._runs.expire(run)
                if any(step.status is StepStatus.WAITING_APPROVAL for step in run.steps):
                    await self._runs.resume_answered(run)


def _stop_watching(watched: dict[asyncio.Task[Execution], str], run_id: str) -> None:
    """Cancel the step watches still running; a watch that ended with an error while the
    run stopped for another one is logged here, not lost."""
    for task, step_id in watched.items():
        if not task.done():
            task.cancel()
        elif not task.cancelled() and task.exception() is not None:
            log.warning("step watch failed", run_id=run_id, step_id=step_id, error=str(task.exception()))
