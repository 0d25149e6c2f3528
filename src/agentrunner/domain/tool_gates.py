"""A tool call that waits for a human: an approval gate (`tools[].requires_approval`), or a
call whose outcome a crash left unknown (`on_unknown_tool_outcome: ask`).

The execution records the call it waits on (`PendingToolCall`) with the status
`waiting_approval`, and holds no worker meanwhile: the run stopped before the call. A
human's answer (`ToolCallAnswer`) is saved on the pending call and the execution queued
again; the re-run replays its journal up to that call, and the answer decides it there.

An answer applies to the one call it was given for: the same step of the same generation,
with the same call id, and for an unknown outcome the same start of it (`step_started_at`).
A re-run that starts the call again records a new start, so an answer "run it again" never
runs it a third time after a second crash: that crash asks again."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PauseReason(StrEnum):
    """Why a tool call waits for a human."""

    # The agent's tool entry says `requires_approval: true`.
    APPROVAL = "approval"
    # The call started in a run that stopped before its outcome was recorded, it is not
    # safe to repeat, and the agent's `on_unknown_tool_outcome` is `ask`.
    TOOL_OUTCOME_UNKNOWN = "tool_outcome_unknown"


class Decision(StrEnum):
    """What a human answered: approve or deny a gated call; for an unknown outcome, it
    happened (with its result), run it again, or fail the execution."""

    APPROVE = "approve"
    DENY = "deny"
    HAPPENED = "happened"
    AGAIN = "again"
    FAIL = "fail"


# The decisions that answer each reason.
DECISIONS: dict[PauseReason, frozenset[Decision]] = {
    PauseReason.APPROVAL: frozenset({Decision.APPROVE, Decision.DENY}),
    PauseReason.TOOL_OUTCOME_UNKNOWN: frozenset({Decision.HAPPENED, Decision.AGAIN, Decision.FAIL}),
}


class ToolCallAnswer(BaseModel):
    """A human's answer to a pending tool call: `result` for `happened` (what the model
    reads as the call's result), `reason` for `deny` (what the model reads as the refusal)."""

    model_config = ConfigDict(frozen=True)

    decision: Decision
    result: str | None = None
    reason: str | None = None
    answered_at: datetime


class PendingToolCall(BaseModel):
    """The tool call an execution waits on: which call of which step, and why."""

    model_config = ConfigDict(frozen=True)

    reason: PauseReason
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    call_id: str
    generation: int
    seq: int
    # When the unknown-outcome step started (the start the question is about); None for a gate.
    step_started_at: datetime | None = None
    asked_at: datetime
    # Set by the answer, read by the re-run that follows it.
    answer: ToolCallAnswer | None = None

    def answers(
        self, reason: PauseReason, generation: int, seq: int, call_id: str, started_at: datetime | None
    ) -> bool:
        """This is an answered question about the call described (see the module's rule)."""
        return (
            self.answer is not None
            and self.reason is reason
            and (self.generation, self.seq, self.call_id) == (generation, seq, call_id)
            and self.step_started_at == started_at
        )
