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

A status change and the end are states, not entries of the journal: they carry the
position the client is at (the id of the event before them), and a reconnect sends the
current status again.

Two limits: a model asked again after a crash mid-answer may answer otherwise than it had
begun to, and the retry of a failed attempt that starts fresh (`retry_config`, a new
generation) writes its answers anew after the failed attempt's: the client then holds text
that is not the answer of record. The `finished` record's output is that answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentrunner.domain.steps import JournalStepKind, JournalStepStatus, Step, record_of
from agentrunner.runtime.journal import RunJournal

# What an id looks like (the API refuses anything else with a 422): three counters.
EVENT_ID_PATTERN = r"^[0-9]{1,9}\.[0-9]{1,9}\.[0-9]{1,12}$"
EVENT_ID_MAX_LENGTH = 32
_EVENT_ID = re.compile(EVENT_ID_PATTERN)

SseEvent = dict[str, Any]  # {"event", "data", "id"}


@dataclass(frozen=True, order=True, slots=True)
class StreamPosition:
    """How far into an execution a client has read: the step (generation, seq) and the
    characters of its text (0 for a tool step)."""

    generation: int = 0
    seq: int = 0
    offset: int = 0

    def __str__(self) -> str:
        return f"{self.generation}.{self.seq}.{self.offset}"

    @classmethod
    def parse(cls, text: str) -> StreamPosition:
        """The position an event id names (raises `ValueError` for anything else)."""
        if len(text) > EVENT_ID_MAX_LENGTH or not _EVENT_ID.fullmatch(text):
            raise ValueError(f"not an event id of this stream: {text[:40]!r}")
        generation, seq, offset = (int(part) for part in text.split("."))
        return cls(generation, seq, offset)

    @property
    def step(self) -> tuple[int, int]:
        """The step's key in the journal: (generation, seq)."""
        return (self.generation, self.seq)


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

    def caught_up(self, steps: Sequence[Step]) -> list[SseEvent]:
        """The recorded steps past the cursor, in journal order, up to the first one with no
        outcome yet (tool calls of one answer end in any order: their events do not)."""
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
            return [{"event": "text", "data": {"text": text}, "id": str(self.at)}] if text else []
        if start.step < self.at.step or (start.step > self.at.step and start.offset > 0):
            return []
        if start.step == self.at.step and start.offset > self.at.offset:
            return []
        return self._text(start, text)

    def state(self, event: str, data: dict[str, Any]) -> SseEvent:
        """A status change or the end, at the client's position."""
        return {"event": event, "data": data, "id": str(self.at)}

    def _text(self, start: StreamPosition, text: str) -> list[SseEvent]:
        """The part of `text` (of `start`'s step, from `start.offset`) past the cursor."""
        end = StreamPosition(start.generation, start.seq, start.offset + len(text))
        if not text or end <= self.at:
            return []
        skip = self.at.offset - start.offset if start.step == self.at.step else 0
        self.at = end
        data = {"text": text[skip:], "generation": end.generation, "seq": end.seq, "offset": start.offset + skip}
        return [{"event": "text", "data": data, "id": str(end)}]
