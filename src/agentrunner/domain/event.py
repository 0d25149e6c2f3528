"""The envelope every message on the event bus travels in."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentrunner.domain.execution import utcnow

EVENT_VERSION = 1


def new_id() -> str:
    """A fresh random identifier (UUID4 hex) for events, executions and traces."""
    return uuid.uuid4().hex


class Event(BaseModel):
    """One event: a topic (routing key), a JSON payload and the trace it belongs to."""

    model_config = ConfigDict(frozen=True)

    version: int = EVENT_VERSION
    event_id: str = Field(default_factory=new_id)
    topic: str
    payload: dict[str, Any] = Field(default_factory=dict)
    trace_id: str
    created_at: datetime = Field(default_factory=utcnow)
    attempt: int = 1
    headers: dict[str, str] = Field(default_factory=dict)


def encode_event(event: Event) -> bytes:
    """The wire form of an event: its whole envelope as JSON (UTF-8)."""
    return event.model_dump_json().encode()


def decode_event(raw: bytes) -> Event:
    """The event in a wire body; raises `ValueError` saying what is wrong with it."""
    try:
        return Event.model_validate_json(raw)
    except ValidationError as exc:
        raise ValueError(f"not an agentrunner event (version {EVENT_VERSION} envelope): {exc}") from exc


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event that failed every delivery attempt to `queue`, with the last error."""

    queue: str
    event: Event
    error: str


class StoredDeadLetter(BaseModel):
    """A dead letter as the platform keeps it, to list and replay (`GET /dead-letters`)."""

    model_config = ConfigDict(frozen=True)

    id: str
    queue: str
    topic: str
    event: Event
    error: str
    attempts: int
    created_at: datetime = Field(default_factory=utcnow)
    replayed_at: datetime | None = None
    # The tenant whose work the event was (its tenant header): who may list and replay it.
    tenant: str | None = None

    def letter(self) -> DeadLetter:
        """The dead letter to hand back to the bus."""
        return DeadLetter(queue=self.queue, event=self.event, error=self.error)
