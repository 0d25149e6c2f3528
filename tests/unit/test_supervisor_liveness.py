"""The liveness rule of `cluster up`'s supervisor: which run of /health/live probes makes a
ready role count as hung (killed and restarted), and which does not."""

from __future__ import annotations

import asyncio
import ssl
from concurrent.futures import Future
from typing import Any

import httpx
import pytest

from agentrunner.api.edge import EdgeConfig, role_app
from agentrunner.liveness import LivenessPolicy, LivenessWatch, is_live, probe_tls
from agentrunner.supervisor import is_ready
from tests.ports import free_port
from tests.threaded_server import ThreadedServer


class Probes:
    """Starts probes whose outcome the test decides: each start is a Future it completes."""

    def __init__(self) -> None:
        self.started: list[Future[bool]] = []

    def start(self) -> Future[bool]:
        self.started.append(Future())
        return self.started[-1]

    def finish_last(self, answered: bool) -> None:
        self.started[-1].set_result(answered)


def _watch(*, interval: float = LivenessPolicy.interval, failures: int = LivenessPolicy.failures) -> LivenessWatch:
    return LivenessWatch(LivenessPolicy(interval=interval, failures=failures), due=0.0)


def test_the_role_is_hung_after_failures_missed_probes_in_a_row() -> None:
    watch, probes = _watch(interval=5, failures=3), Probes()
    verdicts = []
    for now in (0, 5, 10):
        verdicts.append(watch.step(now, probes.start))
        probes.finish_last(answered=False)
    verdicts.append(watch.step(15, probes.start))

    assert verdicts == [False, False, False, True]
    assert len(probes.started) == 3


def test_an_answer_sets_the_misses_back_to_zero() -> None:
    watch, probes = _watch(interval=5, failures=3), Probes()
    verdicts = []
    for now, answered in enumerate((False, False, True, False, False)):
        verdicts.append(watch.step(now * 5, probes.start))
        probes.finish_last(answered)
    verdicts.append(watch.step(25, probes.start))

    assert verdicts == [False] * 6
    assert watch.misses == 2


def test_a_probe_still_in_flight_counts_as_nothing_and_no_second_one_starts() -> None:
    watch, probes = _watch(interval=1, failures=1), Probes()
    watch.step(0, probes.start)

    assert [watch.step(now, probes.start) for now in (1, 2, 50)] == [False, False, False]
    assert len(probes.started) == 1
    assert watch.misses == 0


def test_a_probe_that_raised_is_a_miss() -> None:
    watch, probes = _watch(failures=1), Probes()
    watch.step(0, probes.start)
    probes.started[-1].set_exception(RuntimeError("the probe itself broke"))

    assert watch.step(1, probes.start) is True


def test_the_next_probe_waits_for_the_interval() -> None:
    watch, probes = _watch(interval=5, failures=3), Probes()
    watch.step(0, probes.start)
    probes.finish_last(answered=True)
    watch.step(4.9, probes.start)

    assert len(probes.started) == 1
    watch.step(5, probes.start)
    assert len(probes.started) == 2


def test_no_failures_allowed_means_no_watch() -> None:
    watch, probes = _watch(failures=0), Probes()

    assert [watch.step(now, probes.start) for now in range(0, 100, 5)] == [False] * 20
    assert probes.started == []


def test_the_reason_names_the_probe_and_the_count() -> None:
    assert LivenessPolicy(failures=4).reason == "not live: /health/live did not answer 4 times in a row"


def test_the_defaults_tolerate_a_seven_second_stall_and_act_within_eighteen() -> None:
    # The trade-off docs/operations.md states: a loaded machine must not restart working roles.
    policy = LivenessPolicy()

    assert (policy.failures - 1) * policy.interval - policy.timeout == 7
    assert policy.failures * policy.interval + policy.timeout == 18


def test_a_port_nobody_answers_on_is_not_live() -> None:
    assert is_live(f"http://127.0.0.1:{free_port()}", timeout=1) is False


async def test_live_answers_without_asking_any_dependency() -> None:
    # What the supervisor's rule rests on: /health/live says the role's loop turns, so a
    # database that hangs must not make a role look hung (it makes it not ready).
    asked: list[str] = []

    async def hangs() -> None:
        asked.append("database")
        await asyncio.Event().wait()

    app = role_app("autonomous", "agentrunner test", EdgeConfig(readiness={"database": hangs}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        live = await asyncio.wait_for(http.get("/health/live"), 10)

    assert live.status_code == 200
    assert asked == []


def test_probes_load_the_ca_bundle_once_not_per_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx builds a TLS context per request unless given one: 30 ms of CPU per probe, which
    # was a supervisor's whole idle CPU (57 ms a second for 8 roles), plain HTTP too.
    loads: list[object] = []
    load = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args or kwargs)
        load(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    probe_tls.cache_clear()  # made again here, under the count
    app = role_app("autonomous", "agentrunner test", EdgeConfig(readiness={}))
    server = ThreadedServer("role", free_port())
    server.start(app)
    try:
        url = f"http://127.0.0.1:{server.port}"
        answers = [is_live(url, timeout=5) for _ in range(10)] + [is_ready(url) for _ in range(10)]
    finally:
        server.stop()

    assert answers == [True] * 20
    assert len(loads) <= 1, loads
