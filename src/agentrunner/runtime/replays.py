"""Time travel, for debugging a run: a new execution of an ended one's agent on its input
that reuses the first steps of its journal and runs the rest (`POST /executions/{id}/replay`).

The reused steps are copied into the new execution's journal in the transaction that
accepts it (see `Orchestrator.invoke`'s `replay`: a refused one leaves none behind), so its
first run finds them as a resumed run finds its own: the journal replays them (no model
call, no tool call) up to the first step that differs from its record, and runs from there.
The source is read, never written.
"""

from __future__ import annotations

from agentrunner.domain.agent import ExecutionMode
from agentrunner.domain.errors import BadRequestError, ConflictError, StepOutOfRangeError
from agentrunner.domain.execution import Execution, ReplayOf
from agentrunner.domain.steps import last_generation
from agentrunner.runtime.orchestrator import Orchestrator

# A replay runs on its source's input alone: an agent whose run depends on a conversation or
# a plan run would not run again as it did.
REPLAYABLE_MODES = frozenset({ExecutionMode.AUTONOMOUS, ExecutionMode.SCHEDULED})


async def replay(
    orchestrator: Orchestrator, source: Execution, from_step: int, *, wait: float = 0.0, stream: bool = False
) -> Execution:
    """Start a new execution of `source`'s agent on its input that reuses the first
    `from_step` steps of `source`'s journal (its last generation: the run that ended it)
    and runs the rest. The new execution is the caller's and records `replay_of`; it is
    answered as `Orchestrator.invoke` answers. It takes the source's agent and input only:
    not its caller's webhook_url nor its Slack origin (a debugging run answers whoever asked
    for it; the agent's own webhook_url applies).

    Raises `ConflictError` while `source` has not ended, `BadRequestError` for an agent that
    keeps a conversation or a plan (its run depends on more than its input),
    `StepOutOfRangeError` for a `from_step` past the journal's end, and what `invoke` raises."""
    if not source.status.is_terminal:
        raise ConflictError(
            f"execution {source.execution_id} is still {source.status.value}: replay it once it has ended",
            execution_id=source.execution_id,
        )
    mode = orchestrator.registry.runnable(source.agent).execution_mode
    if mode not in REPLAYABLE_MODES:
        raise BadRequestError(
            f"agent {source.agent!r} is {mode.value}: only autonomous and scheduled agents' executions can be "
            "replayed (a conversation's or a plan's run depends on more than its input)",
            agent=source.agent,
        )
    journal = await orchestrator.steps(source)
    count = len(last_generation(journal))
    if from_step > count:
        raise StepOutOfRangeError(
            f"from_step {from_step} is past the end of execution {source.execution_id}'s journal: "
            f"it has {count} steps, so from_step is 0 (run everything again) to {count} (reuse them all)",
            execution_id=source.execution_id,
            steps=count,
        )
    replay_of = ReplayOf(execution_id=source.execution_id, from_step=from_step)
    return await orchestrator.invoke(source.agent, source.input, wait=wait, stream=stream, replay=(replay_of, journal))
