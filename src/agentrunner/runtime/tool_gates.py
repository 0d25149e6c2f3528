"""What the agent loop does before a tool call a human may have to decide: a call whose
tool entry says `requires_approval`, and a call a crash cut short (started, no outcome
recorded). The journal asks `ToolGate.before` for every tool call it does not replay.

The rules, for a call the last run started and did not record the end of:
- the tool says this call may be repeated (`Tool.repeatable_call`): it runs again;
- else the agent's `on_unknown_tool_outcome` decides: `retry` runs it again, `fail` fails
  the execution (`ToolOutcomeUnknownError`), `ask` (the default) stops the run until a
  human says it happened (the model reads the result they give), to run it again, or to fail.
For a gated call: it runs once approved; denied, the model reads that it was refused.
The model is never told a result nobody gave: an unknown outcome is asked, not guessed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import ToolOutcomeUnknownError
from agentrunner.domain.execution import utcnow
from agentrunner.domain.llm import ToolCall
from agentrunner.domain.steps import Step
from agentrunner.domain.tool_gates import Decision, PauseReason, PendingToolCall, ToolCallAnswer
from agentrunner.logs import get_logger
from agentrunner.ports.tools import Tool

log = get_logger(__name__)


class ToolCallPaused(Exception):
    """The run stops before a tool call until a human answers `pending`."""

    def __init__(self, pending: PendingToolCall) -> None:
        super().__init__(f"{pending.reason.value}: {pending.tool}")
        self.pending = pending


@dataclass(frozen=True, slots=True)
class Answered:
    """A call that is not made: its outcome is what a human said (`result`), or the
    refusal the model reads (`error`)."""

    result: str | None = None
    error: str | None = None


class ToolGate:
    """The decisions of one run of `config`'s loop, given the answer its execution carries
    (`answered`, from the human who ended the last pause), if any."""

    def __init__(self, config: AgentConfig, execution_id: str, answered: PendingToolCall | None = None) -> None:
        self._config = config
        self._execution_id = execution_id
        self._answered = answered

    def before(
        self, generation: int, seq: int, call: ToolCall, tool: Tool | None, unfinished: Step | None
    ) -> Answered | None:
        """None: make the call. `Answered`: do not, its outcome is that. Raises
        `ToolCallPaused` to wait for a human, `ToolOutcomeUnknownError` to fail the run.
        `unfinished`: the step a run started for this call and did not end, if any."""
        if tool is None:  # an unknown tool: the call is an error the model reads, nothing runs
            return None
        if unfinished is not None:
            return self._unknown_outcome(generation, seq, call, tool, unfinished)
        if not self._config.requires_approval(call.name):
            return None
        answer = self._answer(PauseReason.APPROVAL, generation, seq, call, None)
        if answer is None:
            raise ToolCallPaused(self._pending(PauseReason.APPROVAL, generation, seq, call, None))
        if answer.decision is Decision.DENY:
            why = f": {answer.reason}" if answer.reason else ""
            return Answered(error=f"a human refused this call, it was not made{why}")
        return None

    def _unknown_outcome(self, generation: int, seq: int, call: ToolCall, tool: Tool, step: Step) -> Answered | None:
        policy = self._config.on_unknown_tool_outcome
        repeatable = tool.repeatable_call(call.arguments)
        log.warning(
            "a tool call started by an earlier run has no recorded outcome",
            execution_id=self._execution_id,
            tool=call.name,
            seq=seq,
            repeatable=repeatable,
            policy=policy,
        )
        if repeatable or policy == "retry":
            return None
        if policy == "ask":
            answer = self._answer(PauseReason.TOOL_OUTCOME_UNKNOWN, generation, seq, call, step.started_at)
            if answer is None:
                raise ToolCallPaused(
                    self._pending(PauseReason.TOOL_OUTCOME_UNKNOWN, generation, seq, call, step.started_at)
                )
            if answer.decision is Decision.HAPPENED:
                return Answered(result=answer.result or "")
            if answer.decision is Decision.AGAIN:
                return None
        raise ToolOutcomeUnknownError(
            f"tool call {call.name!r} (step {seq}) was under way when the run stopped and it is not safe to "
            "repeat: whether it happened is unknown (on_unknown_tool_outcome: "
            f"{'ask, answered fail' if policy == 'ask' else policy})",
            execution_id=self._execution_id,
            tool=call.name,
        )

    def _answer(
        self, reason: PauseReason, generation: int, seq: int, call: ToolCall, started_at: datetime | None
    ) -> ToolCallAnswer | None:
        answered = self._answered
        if answered is None or not answered.answers(reason, generation, seq, call.id, started_at):
            return None
        return answered.answer

    def _pending(
        self, reason: PauseReason, generation: int, seq: int, call: ToolCall, started_at: datetime | None
    ) -> PendingToolCall:
        return PendingToolCall(
            reason=reason,
            tool=call.name,
            arguments=call.arguments,
            call_id=call.id,
            generation=generation,
            seq=seq,
            step_started_at=started_at,
            asked_at=utcnow(),
        )
