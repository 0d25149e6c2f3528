"""The gate's rule that an answer applies to the one call it was given for: the same step,
the same call, and for an unknown outcome the same start of it, so "run it again" never
runs a call a third time after a second crash, and an approval never answers a crash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.llm import ToolCall
from agentrunner.domain.steps import JournalStepKind, JournalStepStatus, Step
from agentrunner.domain.tool_gates import Decision, PauseReason, PendingToolCall, ToolCallAnswer
from agentrunner.ports.tools import Repeatable, ToolContext
from agentrunner.runtime.tool_gates import Answered, ToolCallPaused, ToolGate

T1 = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
CALL = ToolCall(id="c1", name="kit__send", arguments={"to": "x"})


class Sender:
    """A tool whose calls are not safe to repeat."""

    definition: Any = None
    timeout_seconds = 5.0
    repeatable = Repeatable.NEVER

    def repeatable_call(self, arguments: dict[str, Any]) -> bool:
        return False

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> str:
        raise AssertionError("not called here")


def _config(**extra: Any) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "name": "a",
            "agent_type": "t",
            "execution_mode": "autonomous",
            "llm_config": {"provider": "scripted", "model": "s"},
            "tools": [{"name": "kit", "type": "mcp", "url": "http://kit/mcp", "requires_approval": True}],
            **extra,
        }
    )


def _started(at: datetime) -> Step:
    return Step(
        execution_id="e",
        seq=2,
        kind=JournalStepKind.TOOL,
        name=CALL.name,
        status=JournalStepStatus.STARTED,
        started_at=at,
    )


def _answered(why: PauseReason, decision: Decision, started_at: datetime | None, **answer: Any) -> PendingToolCall:
    return PendingToolCall(
        reason=why,
        tool=CALL.name,
        arguments=CALL.arguments,
        call_id=CALL.id,
        generation=1,
        seq=2,
        step_started_at=started_at,
        asked_at=T1,
        answer=ToolCallAnswer(decision=decision, answered_at=T1, **answer),
    )


def test_run_it_again_applies_to_the_start_it_was_asked_about_only() -> None:
    again = ToolGate(_config(), "e", _answered(PauseReason.TOOL_OUTCOME_UNKNOWN, Decision.AGAIN, T1))

    assert again.before(1, 2, CALL, Sender(), _started(T1)) is None  # run again, once
    with pytest.raises(ToolCallPaused) as second_crash:  # the re-run crashed during it too
        again.before(1, 2, CALL, Sender(), _started(T1 + timedelta(seconds=3)))
    assert second_crash.value.pending.reason is PauseReason.TOOL_OUTCOME_UNKNOWN


def test_an_approval_does_not_answer_a_crash_during_the_approved_call() -> None:
    approved = ToolGate(_config(), "e", _answered(PauseReason.APPROVAL, Decision.APPROVE, None))

    assert approved.before(1, 2, CALL, Sender(), None) is None
    with pytest.raises(ToolCallPaused) as crashed:
        approved.before(1, 2, CALL, Sender(), _started(T1))
    assert crashed.value.pending.reason is PauseReason.TOOL_OUTCOME_UNKNOWN
    with pytest.raises(ToolCallPaused):  # the same tool asked again later: another approval
        approved.before(1, 4, CALL.model_copy(update={"id": "c2"}), Sender(), None)


def test_happened_gives_the_humans_result_and_deny_the_refusal() -> None:
    happened = _answered(PauseReason.TOOL_OUTCOME_UNKNOWN, Decision.HAPPENED, T1, result="sent")
    denied = _answered(PauseReason.APPROVAL, Decision.DENY, None, reason="no")

    assert ToolGate(_config(), "e", happened).before(1, 2, CALL, Sender(), _started(T1)) == Answered(result="sent")
    assert ToolGate(_config(), "e", denied).before(1, 2, CALL, Sender(), None) == Answered(
        error="a human refused this call, it was not made: no"
    )
