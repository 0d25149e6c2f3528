"""The attempts of one execution, under its agent's `retry_config`, to the outcome its pool records.

Each attempt marks the execution running (a conditional write: one that ended meanwhile,
or waits for a human, is not started again), takes the agent's provider fenced by its
concurrency slots and inside its rate limits, and runs in the journal generation it was
given. The attempt itself, a task a cancel request or the watchdog can stop alone, is
the pool's (`RunAttempt`): this module decides what its end means.

- a final answer: succeeded;
- a tool call that waits for a human: waiting_approval, the journal flushed so the
  answer that asked for the call is not asked again;
- a cancel request: cancelled, or timed_out when the scheduler's per-run timeout sent it;
- the agent's `timeout_seconds` passed: timed_out;
- any other failure: retried after `retry_delay_seconds` (doubled each time with
  `exponential_backoff`) while retries are left and the error is retryable, else failed.
  A model call's failure is never retried here: it had its own attempts already.

A retry runs in a new journal generation, fresh, or with `retry_config.resume` in the
failed attempt's, going on from its steps. An attempt that failed because a backing
service was away (`DependencyUnavailableError`: the database that holds the journal, the
limiter's store) goes on from its steps whatever `resume` says, as a re-run after a crash
does: it failed for no reason of the agent's, and starting fresh would call again the
tools it had called. A re-run after a crash (a later attempt that this process did not
retry) and a replay's first run resume the last generation recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from agentrunner.domain.agent import AgentConfig, ExecutionMode
from agentrunner.domain.errors import (
    AgentRunnerError,
    ConflictError,
    DependencyUnavailableError,
    ExecutionCancelledError,
    ExecutionTimedOutError,
    LLMError,
)
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionStatus, ToolCallRecord
from agentrunner.domain.llm import Completion, Spend, add_cost
from agentrunner.domain.steps import Step
from agentrunner.domain.tool_gates import PendingToolCall
from agentrunner.logs import get_logger
from agentrunner.ports.metrics import Metrics
from agentrunner.ports.providers import LLMProvider, ProviderCatalog
from agentrunner.ports.state import ExecutionStore, SessionStore, StepJournal
from agentrunner.runtime.conversation import DEFAULT_MAX_HISTORY_BYTES, keep_interrupted
from agentrunner.runtime.journal import RunJournal
from agentrunner.runtime.limits import HeldSlots
from agentrunner.runtime.rate_limits import RateLimitedProvider, RateLimits
from agentrunner.runtime.run_endings import Progress, ended, unexpected
from agentrunner.runtime.tool_gates import ToolCallPaused, ToolGate

log = get_logger(__name__)


class NotStartable(Exception):
    """The execution could not be marked running: it ended already (finished, cancelled)
    or waits for a human. Its message is acknowledged without a run."""


class CancelledByUser(Exception):
    """An attempt stopped by a cancel request; `request` is the request's event."""

    def __init__(self, request: Event) -> None:
        super().__init__(request)
        self.request = request


class Outcome(NamedTuple):
    """Where an execution's attempts stopped: the execution to record (ended, or paused),
    and the journal's steps to write with it (its last answer: `RunJournal.unwritten`)."""

    execution: Execution
    steps: Sequence[Step] = ()


class RunAttempt(Protocol):
    """One attempt of an execution, as its pool runs it: returns the model's final answer,
    appends its tool calls to `records` as they end; raises `CancelledByUser` when a cancel
    request stopped it, `TimeoutError` past the agent's `timeout_seconds`."""

    async def __call__(
        self,
        config: AgentConfig,
        provider: LLMProvider,
        execution: Execution,
        *,
        stream: bool,
        records: list[ToolCallRecord],
        held: HeldSlots | None,
        journal: RunJournal | None,
        spent: Spend,
    ) -> Completion: ...


class Attempts:
    """Runs an execution's attempts until one ends it, retrying failures by its agent's
    `retry_config`; returns the execution as it ended (or paused), to be recorded."""

    def __init__(
        self,
        *,
        executions: ExecutionStore,
        sessions: SessionStore,
        catalog: ProviderCatalog,
        worker_id: str,
        attempt: RunAttempt,
        progress: Progress,
        metrics: Metrics | None = None,
        rates: RateLimits | None = None,
        journal: StepJournal | None = None,
        max_history_bytes: int = DEFAULT_MAX_HISTORY_BYTES,
    ) -> None:
        self._executions = executions
        self._sessions = sessions
        self._catalog = catalog
        self._worker_id = worker_id
        self._attempt = attempt
        self._progress = progress
        self._metrics = metrics
        self._rates = rates
        self._journal = journal
        self._max_history_bytes = max_history_bytes

    async def run(
        self, config: AgentConfig, execution_id: str, *, stream: bool = False, held: HeldSlots | None = None
    ) -> Outcome:
        """The execution once an attempt ended it or paused it (not saved yet: the pool
        records it, with the steps its journal held back). Raises `NotStartable` when it
        cannot be marked running."""
        retry = config.retry_config
        llm = config.llm_config
        generation: tuple[int, list[Step]] | None = None  # read once the execution has started
        # The model calls made here, every attempt (what was paid for, whatever the end), and
        # those of failed attempts that the next did not go on from (not in its answer's usage).
        spent, unreplayed = Spend(), Spend()
        for retry_number in range(retry.max_retries + 1):
            this_attempt = Spend()
            try:
                # Only from queued or running: a cancel that won the race stays cancelled.
                execution = await self._executions.start_execution(
                    execution_id, worker=self._worker_id, provider=llm.provider.value, model=llm.model
                )
            except ConflictError as exc:
                raise NotStartable from exc
            log.info(
                "execution running", execution_id=execution.execution_id, agent=config.name, attempt=execution.attempts
            )
            await self._progress(execution, {"kind": "status", "status": ExecutionStatus.RUNNING.value})
            # A human's answer to the call it waited on, for this run's gate: kept in the store
            # until the run ends (a crash before the call leaves it for the next run), never
            # recorded again with its end.
            answered, execution = execution.pending_tool_call, execution.model_copy(update={"pending_tool_call": None})
            journal = await self._run_journal(execution, generation, config, answered)
            records: list[ToolCallRecord] = []
            try:
                provider = await self._provider(config, held)
                completion = await self._attempt(
                    config,
                    provider,
                    execution,
                    stream=stream,
                    records=records,
                    held=held,
                    journal=journal,
                    spent=this_attempt,
                )
            except ToolCallPaused as paused:
                if journal is not None:
                    await journal.flush()  # the answer that asked for the call: not asked again
                return Outcome(
                    execution.model_copy(
                        update={
                            "status": ExecutionStatus.WAITING_APPROVAL,
                            "pending_tool_call": paused.pending,
                            "tool_calls": records,
                        }
                    )
                )
            except CancelledByUser as stopped:
                execution = execution.model_copy(update={"tool_calls": records, **_paid(spent + this_attempt)})
                return Outcome(await self._stopped(config, execution, stopped))
            except TimeoutError:
                execution = execution.model_copy(update={"tool_calls": records, **_paid(spent + this_attempt)})
                message = f"agent {config.name!r} did not answer within {config.timeout_seconds:g} s (timeout_seconds)"
                if isinstance(provider, RateLimitedProvider) and provider.waiting_for_store:
                    message += (
                        f": its model call was waiting for the rate limiter's store, which did not answer "
                        f"({provider.waiting_for_store})"
                    )
                return Outcome(ended(execution, ExecutionStatus.TIMED_OUT, ExecutionTimedOutError(message)))
            except Exception as exc:  # noqa: BLE001 - every failure is recorded on the execution
                error = exc if isinstance(exc, AgentRunnerError) else unexpected(exc, execution)
                # A vendor's failure had its step's own attempts (llm_config.max_attempts):
                # running the task again would multiply them (3 x 3 calls to a vendor down).
                retryable = (error.retryable or error is not exc) and not isinstance(error, LLMError)
                if not retryable or retry_number == retry.max_retries:
                    execution = execution.model_copy(update={"tool_calls": records, **_paid(spent + this_attempt)})
                    return Outcome(ended(execution, ExecutionStatus.FAILED, error))
                delay = retry.retry_delay_seconds * (2**retry_number if retry.exponential_backoff else 1)
                if self._metrics is not None:
                    self._metrics.attempt_retried(config.name)
                outage = isinstance(error, DependencyUnavailableError)
                log.warning(
                    "execution attempt failed, retrying",
                    execution_id=execution.execution_id,
                    error=error.message,
                    delay_seconds=delay,
                    resume=retry.resume or outage,
                )
                generation = _retried(journal, resume=retry.resume or outage)
                spent += this_attempt
                if not (retry.resume or outage) or journal is None:  # the next replays none of its calls
                    unreplayed += this_attempt
                await asyncio.sleep(delay)
                continue
            execution = execution.model_copy(
                update={
                    "output": completion.text,
                    "output_json": completion.output_json,
                    # Its answer's calls (those replayed from an earlier run too), and the
                    # calls of the attempts that failed before it and were not gone on from.
                    "usage": completion.usage + unreplayed.usage,
                    "cost_usd": add_cost(completion.cost_usd, unreplayed.cost_usd),
                    "tool_calls": records,
                }
            )
            # The last answer, held back by the journal, is written with the end (one transaction).
            return Outcome(ended(execution, ExecutionStatus.SUCCEEDED), journal.unwritten() if journal else ())
        raise AssertionError("unreachable: the last retry always returns")

    async def _run_journal(
        self,
        execution: Execution,
        generation: tuple[int, list[Step]] | None,
        config: AgentConfig,
        answered: PendingToolCall | None,
    ) -> RunJournal | None:
        """The journal of this attempt: in `generation` (with the steps it has) when a retry
        in this process chose it; else in the last one journaled, which a re-run after a
        crash resumes, or a replay's first run (its source's steps it reuses). A first
        attempt of any other execution has no journal: nothing is read."""
        if self._journal is None:
            return None
        if generation is None and (execution.attempts > 1 or execution.replay_of is not None):
            steps = await self._journal.steps(execution.execution_id)
            last = max((step.generation for step in steps), default=1)
            generation = (last, [step for step in steps if step.generation == last])
        number, recorded = generation or (1, [])
        gate = ToolGate(config, execution.execution_id, answered)
        return RunJournal(
            self._journal,
            execution.execution_id,
            generation=number,
            recorded=recorded,
            model=config.llm_config.model,
            gate=gate,
            # A conversation saves its session between the loop's answer and the end: the
            # answer is journaled before that save, as a re-run must find it.
            last_with_end=config.execution_mode is not ExecutionMode.CONTINUOUS,
        )

    async def _provider(self, config: AgentConfig, held: HeldSlots | None) -> LLMProvider:
        """The agent's provider for one attempt: fenced by its slots (`held`), inside its rate
        limits, so the fence is passed just before a call goes out, after any rate-limit wait."""
        provider = await self._catalog.provider_for(config.llm_config)
        if held is not None:
            provider = held.provider(provider)
        return self._rates.wrap(provider, config) if self._rates is not None else provider

    async def _stopped(self, config: AgentConfig, execution: Execution, stopped: CancelledByUser) -> Execution:
        """`execution` as a cancel request (`stopped`) ended it."""
        request = stopped.request.payload
        if request.get("reason") == ExecutionStatus.TIMED_OUT.value:  # the scheduler's per-run timeout
            message = str(request.get("message") or "stopped: its schedule's timeout_seconds passed")
            return ended(execution, ExecutionStatus.TIMED_OUT, ExecutionTimedOutError(message))
        if request.get("reason") == "interrupt":  # a newer message in its session (on_busy)
            await keep_interrupted(config, self._sessions, execution, max_history_bytes=self._max_history_bytes)
        message = str(request.get("message") or "cancelled on request")
        return ended(execution, ExecutionStatus.CANCELLED, ExecutionCancelledError(message))


def _paid(spent: Spend) -> dict[str, Any]:
    """An ended execution's usage and cost: the model calls made for it in this process,
    whatever its end (a failed or cancelled run was paid for too, and counts in budgets)."""
    return {"usage": spent.usage, "cost_usd": spent.cost_usd}


def _retried(journal: RunJournal | None, *, resume: bool) -> tuple[int, list[Step]] | None:
    """The generation the retry of a failed attempt runs in: the next one, fresh, or with
    `resume` (retry_config.resume) the failed one's, going on from its steps."""
    if journal is None:
        return None
    return (journal.generation, journal.steps()) if resume else (journal.generation + 1, [])
