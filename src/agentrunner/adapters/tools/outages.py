"""Outages of MCP servers: which endpoints do not answer, since when, and when each is
tried next.

A server that does not answer is tried again after a wait that starts at `first_seconds`
and doubles with each failed try up to `max_seconds` (MCP_RETRY_SECONDS), each wait drawn
between three quarters and all of its step: the replicas of a deployment that lost a
server at the same moment spread their tries instead of knocking together. An outage is
opened by the first failure and closed by the first answer, so the caller logs each of
them once, whatever the number of tries in between."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Each wait is drawn in [JITTER * step, step]: with doubling steps, every wait is still
# longer than the one before (1.5 times the last step at least) until the cap.
JITTER = 0.75


@dataclass
class Outage:
    """One endpoint that does not answer."""

    since: float  # monotonic seconds
    reason: str
    tries: int
    due: float  # monotonic seconds of the next try


class Outages:
    """The open outages, by endpoint, with their backoff."""

    def __init__(
        self,
        *,
        first_seconds: float,
        max_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._max = max_seconds
        self._first = min(first_seconds, max_seconds)
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._open: dict[str, Outage] = {}

    def _wait(self, tries: int) -> float:
        step: float = min(self._first * 2.0 ** min(tries - 1, 62), self._max)
        return step * self._rng.uniform(JITTER, 1.0)

    def failed(self, endpoint: str, reason: str) -> Outage | None:
        """A try of `endpoint` failed: schedules the next one. Returns the outage when this
        failure opened it (the caller says so once), else None."""
        now = self._clock()
        outage = self._open.get(endpoint)
        if outage is not None:
            outage.tries += 1
            outage.reason = reason
            outage.due = now + self._wait(outage.tries)
            return None
        outage = self._open[endpoint] = Outage(since=now, reason=reason, tries=1, due=now + self._wait(1))
        return outage

    def answered(self, endpoint: str) -> Outage | None:
        """`endpoint` answered: returns the outage this closes, if one was open."""
        return self._open.pop(endpoint, None)

    def of(self, endpoint: str) -> Outage | None:
        """The open outage of `endpoint`, if any."""
        return self._open.get(endpoint)

    def due(self) -> list[str]:
        """The endpoints whose next try has come."""
        now = self._clock()
        return [endpoint for endpoint, outage in self._open.items() if outage.due <= now]

    def seconds_to_next(self) -> float | None:
        """Seconds until the next try of any endpoint (0 when one is due), None without outages."""
        if not self._open:
            return None
        return max(min(outage.due for outage in self._open.values()) - self._clock(), 0.0)

    def keep_only(self, endpoints: Iterable[str]) -> None:
        """Forget the outages of endpoints no agent uses any more."""
        wanted = set(endpoints)
        for endpoint in [endpoint for endpoint in self._open if endpoint not in wanted]:
            del self._open[endpoint]

    def seconds_since(self, outage: Outage) -> float:
        """How long `outage` has lasted."""
        return self._clock() - outage.since
