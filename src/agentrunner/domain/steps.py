"""The journal of an execution: each model call and each tool call of its agent loop is a
step, recorded with its outcome before the loop goes on, so a re-run replays what was done
instead of paying for it (a model call) or acting again (a tool call).

A step's key is (execution, generation, seq): `seq` counts the steps of one run of the loop
in the order the loop takes them (a model call, then the tool calls it asked for, in the
order asked, then the next model call), so a re-run that replays the same answers meets
the same steps under the same keys. A generation is one fresh start of the loop: the first
run is generation 1, and the retry of a failed attempt (`retry_config`) starts the next
one unless `retry_config.resume` says to go on with the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentrunner.domain.execution import ToolCallRecord, Usage
from agentrunner.domain.llm import Completion, ToolCall


class JournalStepKind(StrEnum):
    """What a step called."""

    MODEL = "model"
    TOOL = "tool"


class JournalStepStatus(StrEnum):
    """Where a step is: started (no outcome recorded yet), or ended with its outcome."""

    STARTED = "started"
    SUCCEEDED = "succeeded"
    # A model call that failed (the run failed with it), or a tool call whose result is an
    # error the model read: a tool's failure is an outcome like any other, replayed as is.
    FAILED = "failed"


class Step(BaseModel):
    """One step of an execution's journal. `outcome` holds, for a model step, the answer
    (`text`, `tool_calls`, `finish_reason`, `usage`, `cost_usd`) or the `error`; for a tool
    step, the call (`call_id`, `arguments`, `iteration`) and its `result` or `error`, with
    `duration_ms`. `replayed`: the last run of the execution took it from the journal
    instead of calling anything."""

    model_config = ConfigDict(frozen=True)

    execution_id: str
    generation: int = 1
    seq: int
    kind: JournalStepKind
    name: str
    status: JournalStepStatus
    outcome: dict[str, Any] = Field(default_factory=dict)
    replayed: bool = False
    started_at: datetime
    finished_at: datetime | None = None

    @property
    def ended(self) -> bool:
        """The step has a recorded outcome."""
        return self.status is not JournalStepStatus.STARTED

    @property
    def duration_ms(self) -> float | None:
        """How long the call took (a tool's own measure; a model call's from its timestamps)."""
        measured = self.outcome.get("duration_ms")
        if isinstance(measured, int | float):
            return float(measured)
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds() * 1000

    @property
    def usage(self) -> Usage | None:
        """Tokens of a model step (None for a tool step)."""
        usage = self.outcome.get("usage")
        return Usage.model_validate(usage) if isinstance(usage, dict) else None

    @property
    def cost_usd(self) -> float | None:
        """What a model step cost (None: a tool step, or no known price)."""
        cost = self.outcome.get("cost_usd")
        return float(cost) if isinstance(cost, int | float) else None


def model_outcome(completion: Completion) -> dict[str, Any]:
    """The outcome of a model step that answered `completion` (its own usage and cost)."""
    return {
        "text": completion.text,
        "tool_calls": [call.model_dump(mode="json") for call in completion.tool_calls],
        "finish_reason": completion.finish_reason,
        "usage": completion.usage.model_dump(mode="json"),
        "cost_usd": completion.cost_usd,
    }


def completion_of(step: Step) -> Completion:
    """The answer a succeeded model step recorded, as the provider gave it."""
    outcome = step.outcome
    return Completion(
        text=str(outcome.get("text") or ""),
        tool_calls=[ToolCall.model_validate(call) for call in outcome.get("tool_calls") or []],
        finish_reason=outcome.get("finish_reason"),
        usage=Usage.model_validate(outcome.get("usage") or {}),
        cost_usd=outcome.get("cost_usd"),
    )


def tool_outcome(record: ToolCallRecord) -> dict[str, Any]:
    """The outcome of a tool step that ended as `record` says."""
    return record.model_dump(
        mode="json", include={"call_id", "arguments", "result", "error", "iteration", "duration_ms"}
    )


def record_of(step: Step) -> ToolCallRecord:
    """The record of the tool call an ended tool step holds."""
    return ToolCallRecord.model_validate(
        {**step.outcome, "name": step.name, "started_at": step.started_at, "finished_at": step.finished_at}
    )


def last_generation(steps: Sequence[Step]) -> list[Step]:
    """The steps of the last generation of a journal (the run that ended the execution)."""
    last = max((step.generation for step in steps), default=1)
    return [step for step in steps if step.generation == last]


def reused_steps(source: Sequence[Step], from_step: int, execution_id: str) -> list[Step]:
    """The first `from_step` steps of `source`'s last generation as the journal of a new
    execution `execution_id` starts with (generation 1, not yet replayed), so that its first
    run replays them instead of calling anything. A step with no recorded outcome (the
    source stopped during it) is left out: it is called again, as a resume would."""
    return [
        step.model_copy(update={"execution_id": execution_id, "generation": 1, "replayed": False})
        for step in last_generation(source)
        if step.seq <= from_step and step.ended
    ]
