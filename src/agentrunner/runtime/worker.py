"""The autonomous pool: consumes agents' work queues and runs each task in a fresh context.

Delivery is at least once; the execution record makes the result idempotent: a message
for an execution that already ended is acknowledged without running it again.
"""

from __future__ import annotations

import asyncio

from agentrunner.domain.agent import AgentConfig, ExecutionMode
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionError, ExecutionStatus, utcnow
from agentrunner.logs import get_logger
from agentrunner.ports import EventBus, ProviderCatalog, StateStore, Subscription
from agentrunner.runtime.agent_run import run_agent
from agentrunner.runtime.registry import AgentRegistry
from agentrunner.runtime.topics import agent_queue, finished_topic, invoke_topic
from agentrunner.tracing import traced

log = get_logger(__name__)

# A scheduled agent invoked by hand runs like an autonomous one: once, in a fresh context.
AUTONOMOUS_POOL_MODES = frozenset({ExecutionMode.AUTONOMOUS, ExecutionMode.SCHEDULED})


class AutonomousPool:
    """Runs invocations of the agents in `modes`; more processes of it share the load."""

    def __init__(
        self,
        *,
        bus: EventBus,
        store: StateStore,
        registry: AgentRegistry,
        catalog: ProviderCatalog,
        prefetch: int = 10,
        modes: frozenset[ExecutionMode] = AUTONOMOUS_POOL_MODES,
    ) -> None:
        self._bus = bus
        self._store = store
        self._registry = registry
        self._catalog = catalog
        self._prefetch = prefetch
        self._modes = modes
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        """Consume the work queue of every available agent in this pool's modes."""
        for config in self._registry.in_modes(self._modes):
            subscription = await self._bus.subscribe(
                agent_queue(config.name), [invoke_topic(config.name)], self.handle, prefetch=self._prefetch
            )
            self._subscriptions.append(subscription)
        log.info("autonomous pool consuming", queues=len(self._subscriptions))

    async def stop(self) -> None:
        """Stop taking work; in-flight tasks finish (the bus bounds how long)."""
        await asyncio.gather(*(subscription.cancel() for subscription in self._subscriptions))
        self._subscriptions.clear()

    async def handle(self, event: Event) -> None:
        """Run the execution named by an `invoke.<agent>` event to a terminal status."""
        with traced(event.trace_id, "autonomous"):
            await self._handle(event)

    async def _handle(self, event: Event) -> None:
        execution = await self._store.get_execution(str(event.payload["execution_id"]))
        if execution.status.is_terminal:
            log.info("execution already finished, redelivery ignored", execution_id=execution.execution_id)
            return
        try:
            config = self._registry.runnable(execution.agent)
        except AgentRunnerError as exc:
            execution = await self._finish(execution, ExecutionStatus.FAILED, error=exc)
        else:
            execution = await self._run(config, execution)
        await self._bus.publish(
            Event(
                topic=finished_topic(execution.agent),
                payload={"execution_id": execution.execution_id, "status": execution.status.value},
                trace_id=execution.trace_id,
            )
        )

    async def _run(self, config: AgentConfig, execution: Execution) -> Execution:
        retry = config.retry_config
        llm = config.llm_config
        for retry_number in range(retry.max_retries + 1):
            execution = execution.model_copy(
                update={
                    "status": ExecutionStatus.RUNNING,
                    "attempts": execution.attempts + 1,
                    "started_at": execution.started_at or utcnow(),
                    "provider": llm.provider.value,
                    "model": llm.model,
                }
            )
            await self._store.save_execution(execution)
            log.info(
                "execution running", execution_id=execution.execution_id, agent=config.name, attempt=execution.attempts
            )
            try:
                provider = self._catalog.provider_for(llm)
                completion = await asyncio.wait_for(
                    run_agent(config, provider, execution.input), config.timeout_seconds
                )
            except TimeoutError:
                message = f"agent {config.name!r} did not answer within {config.timeout_seconds:g} s (timeout_seconds)"
                return await self._finish(execution, ExecutionStatus.TIMED_OUT, error=AgentRunnerError(message))
            except Exception as exc:  # noqa: BLE001 - every failure is recorded on the execution
                error = exc if isinstance(exc, AgentRunnerError) else _unexpected(exc, execution)
                retryable = error.retryable or error is not exc
                if not retryable or retry_number == retry.max_retries:
                    return await self._finish(execution, ExecutionStatus.FAILED, error=error)
                delay = retry.retry_delay_seconds * (2**retry_number if retry.exponential_backoff else 1)
                log.warning(
                    "execution attempt failed, retrying",
                    execution_id=execution.execution_id,
                    error=error.message,
                    delay_seconds=delay,
                )
                await asyncio.sleep(delay)
                continue
            execution = execution.model_copy(
                update={"output": completion.text, "usage": completion.usage, "cost_usd": completion.cost_usd}
            )
            return await self._finish(execution, ExecutionStatus.SUCCEEDED)
        raise AssertionError("unreachable: the last retry always returns")

    async def _finish(
        self, execution: Execution, status: ExecutionStatus, *, error: AgentRunnerError | None = None
    ) -> Execution:
        finished = execution.model_copy(
            update={
                "status": status,
                "finished_at": utcnow(),
                "error": ExecutionError(code=error.code, message=error.message) if error else None,
            }
        )
        await self._store.save_execution(finished)
        log.info(
            "execution finished",
            execution_id=finished.execution_id,
            agent=finished.agent,
            status=status.value,
            input_tokens=finished.usage.input_tokens,
            output_tokens=finished.usage.output_tokens,
        )
        return finished


def _unexpected(exc: Exception, execution: Execution) -> AgentRunnerError:
    log.exception("unexpected error in agent run", execution_id=execution.execution_id, agent=execution.agent)
    return AgentRunnerError(f"unexpected {type(exc).__name__}: {exc}", execution_id=execution.execution_id)
