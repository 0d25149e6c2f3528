"""Which steps of a source's journal a replay starts with (`domain.steps.reused_steps`)."""

from __future__ import annotations

from datetime import UTC, datetime

from agentrunner.domain.steps import JournalStepKind, JournalStepStatus, Step, reused_steps

AT = datetime(2026, 12, 7, tzinfo=UTC)


def _step(generation: int, seq: int, status: JournalStepStatus = JournalStepStatus.SUCCEEDED) -> Step:
    kind = JournalStepKind.MODEL if seq % 2 else JournalStepKind.TOOL
    return Step(
        execution_id="source",
        generation=generation,
        seq=seq,
        kind=kind,
        name="m" if kind is JournalStepKind.MODEL else "t",
        status=status,
        outcome={"seq": seq},
        replayed=True,
        started_at=AT,
        finished_at=None if status is JournalStepStatus.STARTED else AT,
    )


def test_a_replay_starts_with_the_first_steps_of_the_last_generation_as_its_own() -> None:
    source = [_step(1, 1), _step(1, 2), _step(1, 3), _step(2, 1), _step(2, 2), _step(2, 3)]

    reused = reused_steps(source, 2, "replay")

    assert [(s.execution_id, s.generation, s.seq, s.outcome) for s in reused] == [
        ("replay", 1, 1, {"seq": 1}),
        ("replay", 1, 2, {"seq": 2}),
    ]
    assert not any(s.replayed for s in reused), "marked replayed by the run that replays them"
    assert reused_steps(source, 0, "replay") == []
    assert len(reused_steps(source, 3, "replay")) == 3


def test_a_step_the_source_stopped_during_is_not_reused() -> None:
    source = [_step(1, 1), _step(1, 2, JournalStepStatus.STARTED), _step(1, 3, JournalStepStatus.FAILED)]

    assert [s.seq for s in reused_steps(source, 3, "replay")] == [1, 3]
