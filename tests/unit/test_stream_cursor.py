"""The cursor of an execution's stream (`runtime/execution_stream.py`): whatever pieces a
client reads, loses or reads again (its disconnects, a worker's crash that streams an
answer again from its start), the text it assembles is the step's recorded text, each
character once, under ids that only go up."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrunner.domain.steps import JournalStepKind, JournalStepStatus, Step
from agentrunner.runtime.execution_stream import StreamCursor, StreamPosition

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def _step(seq: int, kind: JournalStepKind, status: JournalStepStatus, **outcome: object) -> Step:
    finished = NOW if status is not JournalStepStatus.STARTED else None
    return Step(
        execution_id="e",
        seq=seq,
        kind=kind,
        name="n",
        status=status,
        outcome=outcome,
        started_at=NOW,
        finished_at=finished,
    )


def _pieces(text: str, cuts: list[int]) -> list[str]:
    bounds = sorted({0, len(text), *(cut for cut in cuts if 0 < cut < len(text))})
    return [text[start:end] for start, end in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None, database=None)
@given(
    text=st.text(min_size=1, max_size=30),
    cuts=st.lists(st.integers(1, 29), max_size=12),
    fates=st.lists(st.sampled_from(["read", "lost", "reconnect", "crash"]), max_size=50),
)
def test_the_assembled_text_is_the_recorded_text_once(text: str, cuts: list[int], fates: list[str]) -> None:
    pieces = _pieces(text, cuts)
    cursor = StreamCursor(StreamPosition())  # ?after=0.0.0
    read: list[dict[str, object]] = []
    index = offset = 0
    for fate in fates:
        if fate == "reconnect":  # a new connection, with the id of the last event read
            cursor = StreamCursor(StreamPosition.parse(str(read[-1]["id"])) if read else StreamPosition())
        elif fate == "crash":  # the model step asked again: its text streamed again from the start
            index = offset = 0
        elif index < len(pieces):
            piece = pieces[index]
            if fate == "read":
                payload = {"kind": "text", "text": piece, "generation": 1, "seq": 1, "offset": offset}
                read.extend(cursor.live_text(payload))
            index, offset = index + 1, offset + len(piece)
    # The step is recorded; the next wake-up (a tool call, the end) reads the journal.
    read.extend(cursor.caught_up([_step(1, JournalStepKind.MODEL, JournalStepStatus.SUCCEEDED, text=text)]))

    assert "".join(str(event["data"]["text"]) for event in read) == text  # type: ignore[index]
    positions = [StreamPosition.parse(str(event["id"])) for event in read]
    assert positions == sorted(set(positions))


def test_tool_calls_are_sent_in_the_journals_order_once() -> None:
    ended = {"call_id": "c", "arguments": {}, "result": "ok", "iteration": 1, "duration_ms": 1.0}
    cursor = StreamCursor(StreamPosition())
    steps = [
        _step(1, JournalStepKind.MODEL, JournalStepStatus.SUCCEEDED, text=""),
        _step(2, JournalStepKind.TOOL, JournalStepStatus.STARTED, call_id="c", arguments={}),
        _step(3, JournalStepKind.TOOL, JournalStepStatus.SUCCEEDED, **ended),
    ]
    # Call 3 ended before call 2: it waits for it, so ids never go down.
    assert cursor.caught_up(steps) == []
    steps[1] = _step(2, JournalStepKind.TOOL, JournalStepStatus.SUCCEEDED, **ended)
    assert [event["id"] for event in cursor.caught_up(steps)] == ["1.2.0", "1.3.0"]
    assert cursor.caught_up(steps) == []  # a replayed run's wake-ups send nothing again


@pytest.mark.parametrize("bad", ["", "1.2", "a.b.c", "1.2.3.4", "-1.0.0", " 1.0.0", "1.0.0\n", "1" * 40 + ".0.0"])
def test_an_id_of_another_shape_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an event id"):
        StreamPosition.parse(bad)
