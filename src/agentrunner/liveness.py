"""The liveness watch of `cluster up`'s supervisor: is a ready role still answering?

A role can hang while its process lives: its event loop blocked by a call that never
returns, a deadlock, a SIGSTOP. Such a process never exits, so watching exits alone never
restarts it. Its /health/live is answered on its event loop and touches no dependency
(api/edge.py), so a 200 proves exactly that the loop turns; no 200 within a timeout, a few
times in a row, is taken as a hang. One missed probe is not: a loaded machine or a long
garbage collection can delay an answer for seconds, and killing a working role costs its
work in flight. The supervisor runs the probes (`is_live`, blocking) on a thread pool and
calls `LivenessWatch.step` from its loop; the counting lives here, apart from processes
and threads, so that it can be tested alone.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import cache

import httpx


@dataclass(frozen=True)
class LivenessPolicy:
    """When a ready role that stops answering /health/live is killed and restarted.

    Every `interval` seconds (one probe in flight per role at most) the supervisor asks a
    ready role's /health/live and waits `timeout` seconds for its 200; `failures` probes in
    a row without one mean the role is hung. It then gets SIGTERM, SIGKILL `kill_grace`
    seconds later, and is restarted with the backoff of `RestartPolicy`.

    The trade-off: a role whose answers stall for less than `(failures - 1) * interval -
    timeout` seconds at a time (7 s by default) is never killed, and a hang is acted on
    within `failures * interval + timeout` seconds (18 s) of its start. `failures` 0 turns
    the watch off."""

    interval: float = 5.0
    timeout: float = 3.0
    failures: int = 3
    kill_grace: float = 5.0

    @property
    def reason(self) -> str:
        """A hung role's last exit, as `cluster status` shows it."""
        return f"not live: /health/live did not answer {self.failures} times in a row"


@dataclass
class LivenessWatch:
    """The liveness probes of one ready process: when the next is due, the one in flight,
    and how many in a row went unanswered."""

    policy: LivenessPolicy
    due: float  # monotonic time of the next probe
    misses: int = 0
    probe: Future[bool] | None = None

    def step(self, now: float, start_probe: Callable[[], Future[bool]]) -> bool:
        """Count the probe in flight when it has finished and start the next when it is
        due; True when the process has missed `failures` probes in a row. A probe still in
        flight counts as nothing yet: its own timeout decides."""
        if not self.policy.failures:
            return False
        if self.probe is not None:
            if not self.probe.done():
                return False
            probe = self.probe
            answered = not probe.cancelled() and probe.exception() is None and probe.result()
            self.misses, self.probe = 0 if answered else self.misses + 1, None
            if self.misses >= self.policy.failures:
                return True
        if now >= self.due:
            self.probe, self.due = start_probe(), now + self.policy.interval
        return False


@cache
def probe_tls() -> ssl.SSLContext:
    """The TLS context of every probe, made once (shared by the probes' threads, as an
    `SSLContext` may be). httpx makes one per request otherwise, loading the CA bundle: 30 ms
    of CPU per probe, which was a supervisor's whole idle CPU (57 ms a second for 8 roles
    probed every 5 s) and most of its CPU while the roles start."""
    return httpx.create_ssl_context()


def is_live(health_url: str, timeout: float) -> bool:
    """True when `health_url`/health/live answers 200 within `timeout` seconds (per step:
    connect, send, read)."""
    try:
        return httpx.get(f"{health_url}/health/live", timeout=timeout, verify=probe_tls()).status_code == 200
    except httpx.HTTPError:
        return False
