"""Model calls timed at the vendor's side: where a concurrency limit is measured.

`max_concurrency` promises that no model or tool call starts while more than the limit of
executions hold a slot (runtime/limits.py). An execution's own `running` span is not that
measure: a run whose worker was starved past its lease waits for its slot again while it
stays `running`, and a run cut off by a killed worker keeps its first start. The calls'
spans at the loopback vendor (arrival, answer) are what the vendor sees."""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.fakes.openai_server import FakeOpenAI


class TimedCalls:
    """The fake's script: every model call takes `seconds` at the vendor, and its span
    (arrival, answer; monotonic seconds of this process) is recorded."""

    def __init__(self, fake: FakeOpenAI, seconds: float) -> None:
        self.spans: list[tuple[float, float]] = []
        self._seconds = seconds
        self._lock = threading.Lock()
        fake.script = self

    def __call__(self, body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
        started = time.monotonic()
        time.sleep(self._seconds)
        with self._lock:
            self.spans.append((started, time.monotonic()))
        return "done", None

    def since(self, moment: float) -> list[tuple[float, float]]:
        """The spans of the calls that arrived at or after `moment`."""
        with self._lock:
            return [span for span in self.spans if span[0] >= moment]


def peak(spans: list[tuple[float, float]]) -> int:
    """The most spans (start, end) open at once; one ending as another starts is not both."""
    edges = []
    for start, end in spans:
        edges += [(start, 1), (end, -1)]
    running = most = 0
    for _, step in sorted(edges):
        running += step
        most = max(most, running)
    return most
