"""The cursor of an execution's stream (`runtime/execution_stream.py`): whatever pieces a
client reads, loses or reads again (its disconnects, a worker's crash that streams an
answer again from its start), the text it assembles is the step's recorded text, each
character once, under ids that go strictly up (a status or a ping included); a client
that resumes after any event gets what followed it."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrunner.domain.steps import JournalStepKind, JournalStepStatus, Step
from agentrunner.runtime.execution_stream import StreamCursor, StreamPosition, stream_end

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


def _ids(events: list[dict[str, object]]) -> list[StreamPosition]:
    return [StreamPosition.parse(str(event["id"])) for event in events]


def _strictly_increasing(positions: list[StreamPosition]) -> bool:
    return all(a < b for a, b in itertools.pairwise(positions))


@settings(max_examples=400, deadline=None, database=None)
@given(
    text=st.text(min_size=1, max_size=30),
    cuts=st.lists(st.integers(1, 29), max_size=12),
    fates=st.lists(st.sampled_from(["read", "lost", "reconnect", "crash", "status", "ping"]), max_size=50),
)
def test_the_assembled_text_is_the_recorded_text_once(text: str, cuts: list[int], fates: list[str]) -> None:
    pieces = _pieces(text, cuts)
    read: list[dict[str, object]] = []

    def connect() -> StreamCursor:
        """A new connection, with the id of the last event read (?after=0.0.0 at first),
        which begins with the current status."""
        cursor = StreamCursor(StreamPosition.parse(str(read[-1]["id"])) if read else StreamPosition())
        read.append(cursor.state("status", {"status": "running"}))
        return cursor

    cursor = connect()
    index = offset = 0
    for fate in fates:
        if fate == "reconnect":
            cursor = connect()
        elif fate == "crash":  # the model step asked again: its text streamed again from the start
            index = offset = 0
        elif fate in ("status", "ping"):  # states between two pieces: a status change, a quiet spell
            read.append(cursor.state(fate, {}))
        elif index < len(pieces):
            piece = pieces[index]
            if fate == "read":
                payload = {"kind": "text", "text": piece, "generation": 1, "seq": 1, "offset": offset}
                read.extend(cursor.live_text(payload))
            index, offset = index + 1, offset + len(piece)
    # The step is recorded; the next wake-up (a tool call, the end) reads the journal.
    read.extend(cursor.caught_up([_step(1, JournalStepKind.MODEL, JournalStepStatus.SUCCEEDED, text=text)]))
    read.append(cursor.finished({}))

    assert "".join(str(event["data"]["text"]) for event in read if event["event"] == "text") == text  # type: ignore[index]
    # Every event's id, states' included, is past the one before, across every connection.
    assert _strictly_increasing(_ids(read))
    assert read[-1]["id"] == "1.2.0"  # the end: just past the journal's last step


def _journal(events: list[dict[str, object]]) -> tuple[list[str], str]:
    """What a client holds of the journal from `events`: the tool calls' ids, and the text."""
    calls = [str(event["id"]) for event in events if event["event"] == "tool_call"]
    text = "".join(str(event["data"]["text"]) for event in events if event["event"] == "text")  # type: ignore[index]
    return calls, text


def _connection(steps: list[Step], after: StreamPosition) -> list[dict[str, object]]:
    """A connection to an ended execution, in the watcher's order: the status, what was
    missed, the end."""
    cursor = StreamCursor(after)
    return [cursor.state("status", {"status": "succeeded"}), *cursor.caught_up(steps), cursor.finished({})]


def test_resuming_after_any_event_sends_what_followed_it_once() -> None:
    ended = {"call_id": "c", "arguments": {}, "result": "ok", "iteration": 1, "duration_ms": 1.0}
    steps = [
        _step(1, JournalStepKind.MODEL, JournalStepStatus.SUCCEEDED, text="let me look"),
        _step(2, JournalStepKind.TOOL, JournalStepStatus.SUCCEEDED, **ended),
        _step(3, JournalStepKind.MODEL, JournalStepStatus.SUCCEEDED, text="found it"),
    ]
    # A client that followed it live: states between the steps, text in pieces.
    cursor = StreamCursor(StreamPosition())
    live = [cursor.state("status", {"status": "queued"}), cursor.state("status", {"status": "running"})]
    live += cursor.live_text({"kind": "text", "text": "let ", "generation": 1, "seq": 1, "offset": 0})
    live.append(cursor.state("ping", {}))
    live += cursor.caught_up(steps[:2])
    live += cursor.live_text({"kind": "text", "text": "found", "generation": 1, "seq": 3, "offset": 0})
    live += cursor.caught_up(steps)
    live.append(cursor.finished({"status": "succeeded"}))
    assert _strictly_increasing(_ids(live))
    assert _journal(live) == (["1.2.0"], "let me lookfound it")

    end = stream_end(steps)
    for index, last in enumerate(live[:-1]):
        after = StreamPosition.parse(str(last["id"]))
        resumed = _connection(steps, after)
        # What followed `last` (its journal's events, the end once), under ids past its own.
        assert _journal(resumed) == _journal(live[index + 1 :]), last
        assert [event["event"] for event in resumed].count("finished") == 1
        assert _strictly_increasing(_ids([last, *resumed]))
        assert after < end
    # After `finished`, nothing: the end of the stream is where the client is (the API's 204).
    assert StreamPosition.parse(str(live[-1]["id"])) == end == StreamPosition(1, 4)


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


@pytest.mark.parametrize(
    "bad",
    ["", "1.2", "a.b.c", "1.2.3.4.5", "1.2.3.", "-1.0.0", " 1.0.0", "1.0.0\n", "1" * 40 + ".0.0", "1.1.1." + "1" * 10],
)
def test_an_id_of_another_shape_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an event id"):
        StreamPosition.parse(bad)


def test_an_id_names_its_place_and_a_state_id_comes_after_the_journals() -> None:
    assert StreamPosition.parse("1.2.3") == StreamPosition(1, 2, 3) == StreamPosition.parse("1.2.3.0")
    assert str(StreamPosition(1, 2, 3)) == "1.2.3"  # an event of the journal keeps its three counters
    assert str(StreamPosition(1, 2, 3).next_state()) == "1.2.3.1"
    assert StreamPosition.parse("1.2.3") < StreamPosition.parse("1.2.3.1") < StreamPosition.parse("1.2.4")
    longest = "9" * 9 + "." + "9" * 9 + "." + "9" * 12 + "." + "9" * 9
    assert StreamPosition.parse(longest) == StreamPosition(10**9 - 1, 10**9 - 1, 10**12 - 1, 10**9 - 1)
