"""The backlog port: what the executions table says about the work waiting for workers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class AgentBacklog:
    """One agent's executions that no worker has finished and no human holds.

    `queued`: executions accepted and not started (status queued), whatever the bus holds
    for them; `oldest_queued_at`: since when the oldest of them waits (its acceptance, or
    the answer that queued it again after a pause), None when none waits; `in_hand`:
    executions a worker runs (status running), a run paused for a human left out (its
    message was acknowledged: it holds no worker).
    """

    queued: int = 0
    oldest_queued_at: datetime | None = None
    in_hand: int = 0


class Backlog(Protocol):
    """Counts over the executions of many agents at once, for queue reports and autoscalers.

    Contract: one read of the database, never of a cache (the figures are about now); an
    execution waiting for a human (`waiting_approval`, or the execution of a collaborative
    run paused for an approval or an answer) is in no figure.
    """

    async def backlog(self, agents: Sequence[str]) -> dict[str, AgentBacklog]:
        """The backlog of each of `agents` (an agent with none gets zeros). Raises
        `DependencyUnavailableError` when the database does not answer."""
        ...


@dataclass(frozen=True, slots=True)
class AgentQueueFigures:
    """One agent's queue as an autoscaler reads it (`runtime/queues.py` measures them).

    `ready`: messages in the agent's queue waiting for a consumer (the bus's own count);
    `unacknowledged`: executions a worker holds (`AgentBacklog.in_hand`); the oldest queued
    execution's wait in seconds, None when none waits. A paused run is in none of them.
    """

    pool: str
    agent: str
    queue: str
    ready: int
    unacknowledged: int
    oldest_queued_age_seconds: float | None
