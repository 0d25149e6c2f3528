"""An execution with the journal of its model and tool calls, as the orchestrator's and the
state role's `GET /executions/{id}` show it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from agentrunner.domain.execution import Execution, Usage
from agentrunner.domain.steps import JournalStepKind, JournalStepStatus, Step


class StepView(BaseModel):
    """One model call or tool call of an execution, from its journal."""

    generation: int = Field(description="1, then one more for each retry that started fresh (retry_config).")
    seq: int = Field(description="Its place in its generation's loop: a model call, then the tool calls it asked for.")
    kind: JournalStepKind
    name: str = Field(description="The model, or the tool.")
    status: JournalStepStatus = Field(
        description="started: no outcome recorded (it was under way when the run stopped)."
    )
    duration_ms: float | None
    usage: Usage | None = Field(description="Tokens of a model call (null for a tool call).")
    cost_usd: float | None
    replayed: bool = Field(description="The last run took it from the journal: nothing was called again.")
    started_at: datetime
    finished_at: datetime | None


class ExecutionWithSteps(Execution):
    """An execution and the journal of its model and tool calls."""

    steps: list[StepView] = Field(default_factory=list, description="Its model and tool calls, by generation then seq.")
    saved_cost_usd: float | None = Field(
        default=None,
        description="What the replayed steps would have cost had they been called again (null: none had a price).",
    )


def with_steps(execution: Execution, steps: list[Step]) -> ExecutionWithSteps:
    """`execution` with its journal as the API shows it, and what its replayed steps saved."""
    views = [
        StepView(
            generation=step.generation,
            seq=step.seq,
            kind=step.kind,
            name=step.name,
            status=step.status,
            duration_ms=step.duration_ms,
            usage=step.usage,
            cost_usd=step.cost_usd,
            replayed=step.replayed,
            started_at=step.started_at,
            finished_at=step.finished_at,
        )
        for step in steps
    ]
    saved = [step.cost_usd for step in steps if step.replayed and step.cost_usd is not None]
    return ExecutionWithSteps(
        **execution.model_dump(), steps=views, saved_cost_usd=round(sum(saved), 8) if saved else None
    )
