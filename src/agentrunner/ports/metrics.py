"""The metrics port."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from agentrunner.domain.execution import Execution
from agentrunner.ports.backlog import AgentQueueFigures


class Metrics(Protocol):
    """What the platform counts for operators (served on `/metrics` by every role).

    Contract: recording never raises and never blocks; each process counts its own work.
    """

    def execution_finished(self, execution: Execution, mode: str) -> None:
        """An execution ended: its status, its time from accepted to ended, its tokens and
        cost, the online checks it failed (each counted once: called once per recorded end)."""
        ...

    def attempt_retried(self, agent: str) -> None:
        """An attempt failed and the execution will be tried again."""
        ...

    def dead_lettered(self, queue: str) -> None:
        """An event failed every delivery and became a dead letter."""
        ...

    def schedule_fired(self, lateness_seconds: float) -> None:
        """A schedule's tick was fired, `lateness_seconds` after its time."""
        ...

    def queue_depths_measured(self, depths: Mapping[str, int]) -> None:
        """The events waiting in each queue just now (queues absent from `depths` are gone)."""
        ...

    def queues_measured(self, figures: Sequence[AgentQueueFigures]) -> None:
        """Each running agent's queue just now, by pool and agent (`runtime/queues.py`);
        agents absent from `figures` are gone."""
        ...

    def limits_store_unavailable(self, unavailable: bool) -> None:
        """The store of the concurrency slots and rate-limit buckets stopped (True) or
        started again (False) answering this process."""
        ...

    def limits_store_waited(self, kind: str) -> None:
        """A taker of a slot (`kind` "slot") or of a rate-limit token ("rate") started
        waiting for the store to answer, or a running execution that lost its slot
        ("slot_lost") started waiting for one again before its next model or tool call."""
        ...

    def event_loop_lag(self, seconds: float) -> None:
        """The event loop ran a timer `seconds` late (runtime/loop_lag.py)."""
        ...

    def background_error(self, task: str) -> None:
        """An iteration of the background loop `task` raised what the loop did not expect;
        the loop goes on (background.py)."""
        ...

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in the text exposition format, and its content type."""
        ...
