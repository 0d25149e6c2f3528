"""Resume instead of restart: one run of an agent loop, journaled step by step.

Every model call and tool call of the loop goes through `RunJournal`. A call whose step
has a recorded outcome under the same key (the same kind and name; for a tool, the same
call id and arguments) is not made: its outcome is replayed, the step marked `replayed`.
Otherwise the call is made and its outcome recorded before the loop goes on, so a worker
killed at any point leaves a journal that the next run (a redelivery, a restart's
resume, a consumer restarted by the watchdog) replays up to the first step with no
recorded outcome, and continues from there.

Once one step does not match its record (the agent's prompt or tools changed between the
runs, a model answered differently), nothing after it is replayed: the journal describes
another conversation from there on, and each later step is run and recorded anew.

A tool step is recorded `started` before the tool is called: a step found started on a
re-run is one the last run may or may not have completed (it stopped during the call).
What to do with it, and with a call that needs a human's approval, is the `ToolGate`'s
decision (runtime/tool_gates.py): run it, take a human's answer as its outcome, or stop
the run until a human answers. A model step is recorded once it ended (succeeded, or failed with the
error the run failed with): calling a model again has no effect outside, only a cost.

Costs: a tool step is two writes (started, ended); a model step's outcome rides on the
next write (the start of the first tool call it asked for, or the `settle` before the loop
returns), so a round of the loop costs two transactions. With `last_with_end`, `settle`
writes nothing: what is held back (the last answer) is taken by whoever records the run's
end (`unwritten`) and written in that transaction (`RunEndings.complete`), so a loop that
makes no tool call costs no transaction of its own. Nothing happens outside between the
answer and the end: a crash in between only makes the re-run ask the model again. Writes go through the store's
group commit (`StepJournal.record_step`): the calls of one answer share their transactions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from agentrunner.domain.errors import AgentRunnerError
from agentrunner.domain.execution import ToolCallRecord, utcnow
from agentrunner.domain.llm import Completion, ToolCall
from agentrunner.domain.steps import (
    JournalStepKind,
    JournalStepStatus,
    Step,
    completion_of,
    model_outcome,
    record_of,
    tool_outcome,
)
from agentrunner.logs import get_logger
from agentrunner.ports.state import StepJournal
from agentrunner.ports.tools import Tool
from agentrunner.runtime.tool_calls import ToolOutcome, outcome_message
from agentrunner.runtime.tool_gates import Answered, ToolGate

log = get_logger(__name__)


class RunJournal:
    """The journal of one run of an execution's loop in generation `generation`, given
    the steps of that generation recorded by earlier runs (`recorded`)."""

    def __init__(
        self,
        store: StepJournal,
        execution_id: str,
        *,
        generation: int = 1,
        recorded: Sequence[Step] = (),
        model: str,
        gate: ToolGate | None = None,
        last_with_end: bool = False,
    ) -> None:
        self._store = store
        self._last_with_end = last_with_end
        self._gate = gate
        self._execution_id = execution_id
        self._generation = generation
        self._model = model
        self._recorded = {step.seq: step for step in recorded if step.generation == generation}
        self._steps: dict[int, Step] = dict(self._recorded)
        self._next_seq = 1
        self._diverged = False
        self._held: list[Step] = []  # recorded, not written yet (see `model_call`)
        self._held_write: asyncio.Future[list[None]] | None = None
        self._model_step: int | None = None

    @property
    def model_step(self) -> int | None:
        """The seq of the model step whose call is under way (its streamed text belongs to
        it), or None between model calls."""
        return self._model_step

    @property
    def generation(self) -> int:
        """The generation this run records in."""
        return self._generation

    def steps(self) -> list[Step]:
        """The steps of this generation as they stand now (recorded earlier or by this run)."""
        return [self._steps[seq] for seq in sorted(self._steps)]

    def reserve(self, count: int) -> int:
        """The seq of the first of `count` steps taken now (the tool calls of one answer run
        at once: each gets its seq from the order the model asked them in)."""
        first = self._next_seq
        self._next_seq += count
        return first

    async def model_call(self, call: Callable[[], Awaitable[Completion]]) -> Completion:
        """The model's answer: replayed from the journal when this step has one (nothing is
        called, nothing is streamed), else `call`ed and recorded before it is returned.
        Raises what `call` raises (recorded as the step's failure)."""
        seq = self.reserve(1)
        found = self._replayable(seq, JournalStepKind.MODEL, self._model)
        if found is not None and found.status is JournalStepStatus.SUCCEEDED:
            self._replayed(found)
            return completion_of(found)
        started_at = utcnow()
        self._model_step = seq
        try:
            completion = await call()
        except Exception as exc:
            # Recorded for the timeline; a failed model step is called again by a re-run.
            error = (exc.code, exc.message) if isinstance(exc, AgentRunnerError) else ("unexpected", repr(exc))
            failed = self._step(seq, JournalStepKind.MODEL, self._model, JournalStepStatus.FAILED, started_at)
            failed = failed.model_copy(update={"outcome": {"error": {"code": error[0], "message": error[1]}}})
            await self._record_quietly(failed)
            raise
        finally:
            self._model_step = None
        step = self._step(seq, JournalStepKind.MODEL, self._model, JournalStepStatus.SUCCEEDED, started_at)
        # Written with the next write (the first tool call's start: nothing happens outside
        # before it) or by `flush`, so an answer with tool calls costs no transaction of its own.
        self._hold(step.model_copy(update={"outcome": model_outcome(completion)}))
        return completion

    async def tool_call(
        self,
        seq: int,
        call: ToolCall,
        run: Callable[[], Awaitable[ToolOutcome]],
        *,
        tool: Tool | None = None,
        iteration: int = 1,
    ) -> ToolOutcome:
        """The outcome of tool call `call` (of `tool`, in round `iteration`) as step `seq`:
        replayed when recorded (the tool is not called); else, as the gate decides (a call
        that started with no recorded outcome, a call that needs approval), recorded as
        started, `run`, and recorded with its outcome, or recorded with the outcome a human
        gave. Raises `ToolCallPaused` (the run waits for a human: nothing is recorded for
        the call) and `ToolOutcomeUnknownError` as the gate does."""
        found = self._replayable(seq, JournalStepKind.TOOL, call.name, call)
        if found is not None and found.ended:
            self._replayed(found)
            record = record_of(found)
            return ToolOutcome(outcome_message(call, record), record)
        if self._gate is not None:
            answered = self._gate.before(self._generation, seq, call, tool, found)
            if answered is not None:
                return await self._answered(seq, call, answered, iteration)
        started = self._step(seq, JournalStepKind.TOOL, call.name, JournalStepStatus.STARTED, utcnow())
        await self._record(started.model_copy(update={"outcome": {"call_id": call.id, "arguments": call.arguments}}))
        outcome = await run()
        status = JournalStepStatus.FAILED if outcome.record.error is not None else JournalStepStatus.SUCCEEDED
        await self._record(
            started.model_copy(
                update={"status": status, "outcome": tool_outcome(outcome.record), "finished_at": utcnow()}
            )
        )
        return outcome

    async def _answered(self, seq: int, call: ToolCall, answered: Answered, iteration: int) -> ToolOutcome:
        """The outcome a human gave for a call that is not made, recorded as its step's."""
        now = utcnow()
        record = ToolCallRecord(
            call_id=call.id,
            name=call.name,
            arguments=call.arguments,
            result=answered.result if answered.error is None else None,
            error=answered.error,
            iteration=iteration,
            started_at=now,
            finished_at=now,
            duration_ms=0.0,
        )
        status = JournalStepStatus.FAILED if record.error is not None else JournalStepStatus.SUCCEEDED
        step = self._step(seq, JournalStepKind.TOOL, call.name, status, now)
        await self._record(step.model_copy(update={"outcome": tool_outcome(record)}))
        return ToolOutcome(outcome_message(call, record), record)

    def _replayable(self, seq: int, kind: JournalStepKind, name: str, call: ToolCall | None = None) -> Step | None:
        """The step recorded under `seq` when it is this one; after the first that is not,
        none (the run went another way from there)."""
        if self._diverged:
            return None
        found = self._recorded.get(seq)
        if found is None:
            return None
        same = found.kind is kind and found.name == name
        if same and call is not None:
            same = found.outcome.get("call_id") == call.id and found.outcome.get("arguments") == call.arguments
        if not same:
            log.warning(
                "the journal differs from this run from here on: later steps run again",
                execution_id=self._execution_id,
                seq=seq,
                recorded=f"{found.kind.value} {found.name}",
                now=f"{kind.value} {name}",
            )
            self._diverged = True
            return None
        return found

    def _step(
        self, seq: int, kind: JournalStepKind, name: str, status: JournalStepStatus, started_at: datetime
    ) -> Step:
        return Step(
            execution_id=self._execution_id,
            generation=self._generation,
            seq=seq,
            kind=kind,
            name=name,
            status=status,
            started_at=started_at,
            finished_at=utcnow() if status is not JournalStepStatus.STARTED else None,
        )

    async def flush(self) -> None:
        """Write what is held back (the last answer, replay marks), now."""
        self._write_held()
        if self._held_write is not None:
            await self._held_write

    async def settle(self) -> None:
        """Before the loop returns its answer: `flush`, unless the run's end carries what is
        held back (`last_with_end`: see `unwritten`)."""
        if not self._last_with_end:
            await self.flush()

    def unwritten(self) -> list[Step]:
        """Take what is held back and not written (the last answer, replay marks), for the
        caller to write with the run's end: this journal forgets it."""
        held, self._held = self._held, []
        return held

    def _replayed(self, step: Step) -> None:
        if not step.replayed:  # a mark for the timeline: it rides on the next write
            self._hold(step.model_copy(update={"replayed": True}))

    def _hold(self, step: Step) -> None:
        self._steps[step.seq] = step
        self._held.append(step)

    def _write_held(self) -> None:
        if self._held:
            held, self._held = self._held, []
            self._held_write = asyncio.gather(*(self._store.record_step(one) for one in held))

    async def _record(self, step: Step) -> None:
        """Write `step` with what is held back (one transaction of the group commit), and
        return once both are written: every tool call of an answer waits for the answer.
        A tool's start that could not be written is forgotten: the tool is not called, so
        a retry that goes on from these steps (`steps`) does not find a call under way."""
        before = self._steps.get(step.seq)
        self._steps[step.seq] = step
        self._write_held()
        try:
            if self._held_write is None:
                await self._store.record_step(step)
                return
            await asyncio.gather(self._held_write, self._store.record_step(step))
        except BaseException:
            if step.status is JournalStepStatus.STARTED:
                if before is None:
                    del self._steps[step.seq]
                else:
                    self._steps[step.seq] = before
            raise

    async def _record_quietly(self, step: Step) -> None:
        """Record a failed step without hiding the failure it records."""
        try:
            await self._record(step)
        except AgentRunnerError as exc:
            log.warning("failed step not journaled", execution_id=self._execution_id, seq=step.seq, error=exc.message)
