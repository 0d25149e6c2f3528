"""Streams that survive: the events of one execution's stream (`GET /executions/{id}/events`)
carry ids that say how far into the execution a client has read, so a client that
reconnects with the last id it read (`Last-Event-ID`, or `?after=`) gets what it missed and
nothing twice, across its own disconnects and across a worker's crash.

An id is a position in the execution's journal, `generation.seq.offset`: the step (its key
in the journal, `domain/steps.py`) and, for a model step's text, how many characters of
that step's text the client has once it read the event. The journal is what a re-run
replays, so the position means the same thing before and after a crash: a resumed run
replays the steps it recorded (their text is not streamed again, `runtime/journal.py`), and
a model step the crash cut short is asked again under the same key, its text streamed again
from offset 0, of which the client is sent only what lies past its offset.

Where the events come from: a tool call, and a model step's text the client missed, from
the journal (read when the stream starts and at each wake-up: a tool call's progress, a
status change, the end, a ping after a quiet spell); the text of a model step under way, live from the
worker's progress events (best effort), each piece stamped with its step and offset. A
piece that does not follow what the client has (it connected, or the progress was lost,
mid-answer) is not sent: the step's whole text is, from the journal, once the step is
recorded. So the client's text of a step is always a prefix of the recorded text, and ends
equal to it.

A status change, a ping and a tool call or text without a journal are states, not entries of
the journal: each carries the position the client is at and a fourth counter, how many
such events it has read at that position (`generation.seq.offset.state`), so ids go
strictly up across the client's connections however many states fall between two steps.
An id of three counters is one of the journal's (state 0): the journal's events are named
so, and an id an older client kept still resumes. A reconnect sends the current status
first (the status is a state, the journal does not hold its changes: a client away while
it changed learns where it stands, and may read a status it had already read), then what it
missed of the journal, then goes on live. A ping stays an event, with its id: a page's
script sees it (EventSource hands it no SSE comment; sse-starlette's keep-alive comments
are those), and reading the journal at a quiet spell may have sent something before it.

`finished` is the end of the stream: its id is the position just past the journal's last
step (`stream_end`), and nothing follows it. A client that reconnects with that id (or any
past the end) once the execution has ended has read everything: the API answers it
204 No Content, on which a browser's EventSource stops reconnecting (a stream that sent
`finished` again would have it loop). So `finished` reaches a client once, across its
reconnects; one that left before reading it gets it (after the current status) on its
next connection.

Two limits: a model asked again after a crash mid-answer may answer otherwise than it had
begun to, and the retry of a failed attempt that starts fresh (`retry_config`, a new
generation) writes its answers anew after the failed attempt's: the client then holds text
that is not the answer of record. The `finished` record's output is that answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from agentrunner.domain.steps import JournalStepKind, JournalStepStatus, Step, record_of
from agentrunner.runtime.journal import RunJournal

# What an id looks like (the API refuses anything else with a 422): three counters, and a
# fourth for a state event. The bound is the longest id the pattern takes (9+9+12+9 digits
# and three dots: it was 32 with three counters), checked before the pattern is.
EVENT_ID_PATTERN = r"^[0-9]{1,9}\.[0-9]{1,9}\.[0-9]{1,12}(\.[0-9]{1,9})?$"
EVENT_ID_MAX_LENGTH = 42
_EVENT_ID = re.compile(EVENT_ID_PATTERN)

SseEvent = dict[str, Any]  # {"event", "data", "id"}


@dataclass(frozen=True, order=True, slots=True)
class StreamPosition:
    """How far into an execution a client has read: the step (generation, seq), the
    characters of its text (0 for a tool step), and the state events read since (0 for an
    event of the journal). Ordered as that tuple: the order of the stream."""

    generation: int = 0
    seq: int = 0
    offset: int = 0
    state: int = 0

    def __str__(self) -> str:
        journal = f"{self.generation}.{self.seq}.{self.offset}"
        return f"{journal}.{self.state}" if self.state else journal

    @classmethod
    def parse(cls, text: str) -> StreamPosition:
        """The position an event id names (raises `ValueError` for anything else)."""
        if len(text) > EVENT_ID_MAX_LENGTH or not _EVENT_ID.fullmatch(text):
            raise ValueError(f"not an event id of this stream: {text[:50]!r}")
        return cls(*(int(part) for part in text.split(".")))

    def next_state(self) -> StreamPosition:
        """The position of a state event sent at this one."""
        return replace(self, state=self.state + 1)

    @property
    def step(self) -> tuple[int, int]:
        """The step's key in the journal: (generation, seq)."""
        return (self.generation, self.seq)


def stream_end(steps: Sequence[Step]) -> StreamPosition:
    """Where the stream of an execution with these steps ends, the id of its `finished`:
    just past the last step (of a journal that no longer grows once the execution has
    ended), with or without an outcome."""
    last = max((step.generation, step.seq) for step in steps) if steps else (0, 0)
    return StreamPosition(last[0], last[1] + 1)


def text_progress(journal: RunJournal | None, offsets: dict[int, int], piece: str) -> dict[str, Any]:
    """The progress payload of a piece of streamed text, stamped with its model step and the
    offset it starts at in the step's text (`offsets`: characters streamed so far, by seq,
    for one attempt). Without a journal the piece has no position."""
    payload: dict[str, Any] = {"kind": "text", "text": piece}
    seq = journal.model_step if journal is not None else None
    if journal is not None and seq is not None:
        start = offsets.get(seq, 0)
        offsets[seq] = start + len(piece)
        payload |= {"generation": journal.generation, "seq": seq, "offset": start}
    return payload


class StreamCursor:
    """What one client of an execution's stream has been sent (`at`), and the events that
    take it further, each past the last one: never an event twice, never text twice."""

    def __init__(self, after: StreamPosition | None = None) -> None:
        self.at = after or StreamPosition()
        self._end = StreamPosition(0, 1)  # of the journal as last read (`caught_up`)

    def caught_up(self, steps: Sequence[Step]) -> list[SseEvent]:
        """The recorded steps past the cursor, in journal order, up to the first one with no
        outcome yet (tool calls of one answer end in any order: their events do not)."""
        self._end = stream_end(steps)
        events: list[SseEvent] = []
        for step in steps:
            if not step.ended:
                break
            if step.kind is JournalStepKind.TOOL:
                position = StreamPosition(step.generation, step.seq, 0)
                if position > self.at:
                    self.at = position
                    data = record_of(step).model_dump(mode="json")
                    events.append({"event": "tool_call", "data": data, "id": str(position)})
            elif step.status is JournalStepStatus.SUCCEEDED:
                text = str(step.outcome.get("text") or "")
                events.extend(self._text(StreamPosition(step.generation, step.seq, 0), text))
        return events

    def live_text(self, payload: dict[str, Any]) -> list[SseEvent]:
        """A piece of text as the worker streamed it: what of it the client lacks, or nothing
        when it does not follow what the client has (then the journal sends the step)."""
        text = str(payload.get("text") or "")
        try:
            start = StreamPosition(int(payload["generation"]), int(payload["seq"]), int(payload["offset"]))
        except (KeyError, TypeError, ValueError):  # a worker without a journal: no position
            return [self.state("text", {"text": text})] if text else []
        if start.step < self.at.step or (start.step > self.at.step and start.offset > 0):
            return []
        if start.step == self.at.step and start.offset > self.at.offset:
            return []
        return self._text(start, text)

    def state(self, event: str, data: dict[str, Any]) -> SseEvent:
        """A status change, a ping (or an event without a journal) at the client's position:
        the next state there."""
        self.at = self.at.next_state()
        return {"event": event, "data": data, "id": str(self.at)}

    def finished(self, data: dict[str, Any]) -> SseEvent:
        """The end of the stream, at the end of the journal as last read (past the client's
        position, were it given one past the end)."""
        self.at = max(self._end, self.at.next_state())
        return {"event": "finished", "data": data, "id": str(self.at)}

    def _text(self, start: StreamPosition, text: str) -> list[SseEvent]:
        """The part of `text` (of `start`'s step, from `start.offset`) past the cursor."""
        end = StreamPosition(start.generation, start.seq, start.offset + len(text))
        if not text or end <= self.at:
            return []
        skip = self.at.offset - start.offset if start.step == self.at.step else 0
        self.at = end
        data = {"text": text[skip:], "generation": end.generation, "seq": end.seq, "offset": start.offset + skip}
        return [{"event": "text", "data": data, "id": str(end)}]
