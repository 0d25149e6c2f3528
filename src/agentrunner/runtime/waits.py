"""Callers waiting for an execution (its invoker, the retries of its invocation): woken
when it ends and, those who asked, when it waits for a human (nothing happens to it then
until one answers), with the execution as stored (`Orchestrator._on_finished`)."""

from __future__ import annotations

import asyncio

from agentrunner.domain.execution import Execution

Waiter = asyncio.Future[Execution | None]


class Waits:
    """The waiters of the executions one orchestrator is asked to wait for."""

    def __init__(self) -> None:
        self._waiters: dict[str, list[Waiter]] = {}
        self._human_ends: set[Waiter] = set()  # waiters whose wait ends at a human too

    def add(self, execution_id: str, *, human_ends_it: bool) -> Waiter:
        waiter: Waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(execution_id, []).append(waiter)
        if human_ends_it:
            self._human_ends.add(waiter)
        return waiter

    def forget(self, execution_id: str, waiter: Waiter) -> None:
        self._human_ends.discard(waiter)
        waiters = self._waiters.get(execution_id, [])
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            self._waiters.pop(execution_id, None)

    def woken(self, execution_id: str, *, ended: bool) -> list[Waiter]:
        """The waiters still waiting that the execution's end (`ended`), or its wait for a
        human, wakes."""
        return [
            waiter
            for waiter in self._waiters.get(execution_id, [])
            if not waiter.done() and (ended or waiter in self._human_ends)
        ]

    def cancel_all(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.cancel()
