"""An audit entry: who changed what, and when.

Written for every change an operator or a tenant makes to what the platform holds or
runs besides invoking agents: an agent-file reload, a plan approved or rejected, a dead
letter replayed or discarded, a session's state written or deleted. Entries are read by
admins only (`GET /audit`): they name every tenant's actions.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentrunner.domain.execution import utcnow

# The actor of a change made with API auth off (no key, so no tenant to name).
ANONYMOUS = "anonymous"


class AuditAction(StrEnum):
    """What was changed."""

    CONFIG_RELOAD = "config.reload"
    PLAN_RUN_APPROVE = "plan_run.approve"
    PLAN_RUN_REJECT = "plan_run.reject"
    DEAD_LETTER_REPLAY = "dead_letter.replay"
    DEAD_LETTER_DISCARD = "dead_letter.discard"
    STATE_WRITE = "state.write"
    STATE_DELETE = "state.delete"


class AuditEntry(BaseModel):
    """One change: `actor` is `tenant:<name>`, `admin:<name>` (a key of ADMIN_API_KEYS) or
    `anonymous` (auth off); `subject` the id of what changed; `details` a few facts about
    the change, never the data written (a session's memory, a plan's text)."""

    model_config = ConfigDict(frozen=True)

    # Assigned by the store, in the order entries are written (the cursor of `GET /audit`).
    id: int | None = None
    at: datetime = Field(default_factory=utcnow)
    actor: str
    action: AuditAction
    subject: str
    trace_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


def actor_name(tenant: str | None, *, admin: bool) -> str:
    """How an entry names the caller whose key made the change."""
    if tenant is None:
        return ANONYMOUS
    return f"{'admin' if admin else 'tenant'}:{tenant}"
