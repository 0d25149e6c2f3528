"""The envelope every message on the event bus travels in."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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
