"""The scheduler in a whole node, on each event bus: schedules from agent files and from the
API fire on time and run through the autonomous pool, with their fires audited; overlap
and timeout policies hold with a slow `scripted` provider; hot reload updates schedules."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.domain.execution import ExecutionStatus
from agentrunner.domain.llm import LLMRequest
from agentrunner.domain.schedule import FireStatus, ScheduleFire
from agentrunner.node import Node
from tests.integration.conftest import BUSES, node_on


def _agent(name: str, provider: str, schedule: str = "") -> str:
    text = f"name: {name}\nagent_type: t\nexecution_mode: scheduled\nllm_config: {{provider: {provider}, model: m}}\n"
    return text + (
        f"schedule_config: {schedule}\n" if schedule else "schedule_config: {type: cron, cron: '0 0 1 1 *'}\n"
    )


TICKER = _agent("ticker", "echo", "{type: interval, interval_seconds: 1, task_data: {prompt: tick}}")
SLOW = _agent("slow", "scripted")
FAST_WATCH = {"scheduler_watch_seconds": 0.1, "scheduler_refresh_seconds": 0.5}


async def _slow_reply(request: LLMRequest) -> str:
    prompt = request.messages[-1].content
    await asyncio.sleep(float(prompt))
    return f"slept {prompt}"


@pytest.fixture(params=BUSES)
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Node]:
    agents = {"ticker.yml": TICKER, "slow.yml": SLOW}
    async with node_on(request.param, tmp_path, agents, script=_slow_reply, **FAST_WATCH) as node:
        yield node


def _client(node: Node) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=node.apps()["scheduler"]), base_url="http://scheduler")


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = 15) -> Any:
    async def poll() -> Any:
        while not (result := await check()):
            await asyncio.sleep(0.05)
        return result

    return await asyncio.wait_for(poll(), timeout)


async def _fires(http: httpx.AsyncClient, schedule_id: str) -> list[ScheduleFire]:
    response = await http.get(f"/schedules/{schedule_id}/fires", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return [ScheduleFire.model_validate(item) for item in response.json()["items"]][::-1]


async def test_a_config_schedule_fires_each_tick_once_and_audits_each_run(node: Node) -> None:
    async with _client(node) as http:

        async def three_done() -> list[ScheduleFire] | None:
            fires = await _fires(http, "config:ticker")
            done = [f for f in fires if f.outcome is ExecutionStatus.SUCCEEDED]
            return fires if len(done) >= 3 else None

        fires = await _until(three_done)
        listed = (await http.get("/schedules")).json()

    times = [fire.fire_time for fire in fires]
    assert all(later - earlier == timedelta(seconds=1) for earlier, later in itertools.pairwise(times))
    assert all(time.microsecond == 0 for time in times), "interval ticks fall on multiples of the interval"
    done = [fire for fire in fires if fire.outcome is ExecutionStatus.SUCCEEDED]
    assert all(fire.status is FireStatus.FIRED and fire.result == "tick" for fire in done)
    assert all(fire.started_at and fire.finished_at and fire.fired_at >= fire.fire_time for fire in done)
    execution = await node.store.executions.get_execution(str(done[0].execution_id))
    assert execution.schedule_id == "config:ticker"
    assert execution.input == {"prompt": "tick"}
    ticker = next(item for item in listed if item["schedule"]["id"] == "config:ticker")
    assert ticker["schedule"]["source"] == "config"
    assert ticker["next_fire_at"] is not None


async def test_schedules_are_created_listed_paused_resumed_triggered_and_deleted_over_http(node: Node) -> None:
    body = {"agent": "slow", "cron": "0 9 * * 1-5", "timezone": "Europe/Paris", "task_data": {"prompt": "0"}}
    async with _client(node) as http:
        created = await http.post("/schedules", json={**body, "id": "weekday-report"})
        duplicate = await http.post("/schedules", json={**body, "id": "weekday-report"})
        listed = await http.get("/schedules", params={"agent": "slow"})
        paused = await http.post("/schedules/weekday-report/pause")
        resumed = await http.post("/schedules/weekday-report/resume")
        triggered = await http.post("/schedules/weekday-report/trigger")
        execution_id = triggered.json()["execution_id"]

        async def run_done() -> bool:
            return (await node.store.executions.get_execution(execution_id)).status is ExecutionStatus.SUCCEEDED

        await _until(run_done)
        fires = await _fires(http, "weekday-report")
        deleted = await http.delete("/schedules/weekday-report")
        gone = await http.get("/schedules/weekday-report")
        config_delete = await http.delete("/schedules/config:ticker")
        unknown_agent = await http.post("/schedules", json={**body, "agent": "nobody"})
        bad_cron = await http.post("/schedules", json={**body, "cron": "61 * * * *"})
        both = await http.post("/schedules", json={**body, "interval_seconds": 5})

    assert created.status_code == 201, created.text
    view = created.json()
    assert view["next_fire_at_local"].endswith(("+01:00", "+02:00"))
    assert view["next_fire_at_local"][11:19] == "09:00:00"
    assert duplicate.status_code == 409
    assert [item["schedule"]["id"] for item in listed.json()] == ["config:slow", "weekday-report"]
    assert paused.json()["schedule"]["paused"] is True
    assert paused.json()["next_fire_at"] is None
    assert resumed.json()["next_fire_at"] == view["next_fire_at"]
    assert triggered.status_code == 202
    assert [(f.status, f.note, f.outcome) for f in fires] == [
        (FireStatus.FIRED, "triggered through the API", ExecutionStatus.SUCCEEDED)
    ]
    assert deleted.status_code == 204
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "schedule_not_found"
    assert config_delete.status_code == 409
    assert "schedule_config" in config_delete.json()["error"]["message"]
    assert unknown_agent.status_code == 404
    assert bad_cron.status_code == 422
    assert "cron" in bad_cron.json()["error"]["message"]
    assert both.status_code == 422


async def test_a_run_past_its_timeout_is_stopped_and_recorded_timed_out(node: Node) -> None:
    body = {"agent": "slow", "interval_seconds": 3600, "task_data": {"prompt": "30"}, "timeout_seconds": 0.5}
    async with _client(node) as http:
        await http.post("/schedules", json={**body, "id": "too-slow"})
        triggered = (await http.post("/schedules/too-slow/trigger")).json()

        async def ended() -> Any:
            # Its worker stops it on the watch's request and records it timed_out (never cancelled).
            execution = await node.store.executions.get_execution(triggered["execution_id"])
            return execution if execution.status.is_terminal else None

        execution = await _until(ended, timeout=10)
        [fire] = await _fires(http, "too-slow")

    assert execution.status is ExecutionStatus.TIMED_OUT
    assert execution.error is not None
    assert execution.error.code == "timed_out"
    assert "0.5 s" in execution.error.message
    assert "did not stop it" not in execution.error.message, "stopped by its worker, not rewritten late"
    assert fire.outcome is ExecutionStatus.TIMED_OUT


async def test_overlap_skip_never_runs_two_at_once_and_queue_one_holds_one_tick(node: Node) -> None:
    slow_run = {"agent": "slow", "interval_seconds": 0.4, "task_data": {"prompt": "1.5"}}
    async with _client(node) as http:
        await http.post("/schedules", json={**slow_run, "id": "skipper"})
        await http.post("/schedules", json={**slow_run, "id": "queuer", "overlap_policy": "queue_one"})

        async def two_runs_done(schedule_id: str) -> list[ScheduleFire] | None:
            fires = await _fires(http, schedule_id)
            done = [f for f in fires if f.outcome is ExecutionStatus.SUCCEEDED]
            return fires if len(done) >= 2 else None

        skipped = await _until(lambda: two_runs_done("skipper"))
        queued = await _until(lambda: two_runs_done("queuer"))
        await http.post("/schedules/skipper/pause")
        await http.post("/schedules/queuer/pause")

    ran = [f for f in skipped if f.status is FireStatus.FIRED]
    assert any(f.status is FireStatus.SKIPPED and "still going" in str(f.note) for f in skipped)
    for earlier, later in itertools.pairwise(ran):  # the last one may be queued still: no start needed
        assert earlier.finished_at is not None, "a run was fired while the one before it was going"
        assert later.fired_at >= earlier.finished_at - timedelta(milliseconds=1), "runs never overlap"
    held = [f for f in queued if f.status is FireStatus.FIRED and f.fired_at - f.fire_time > timedelta(seconds=0.5)]
    assert held, "a tick was held until the run before it ended"
    ran = [f for f in queued if f.status is FireStatus.FIRED]
    for earlier, later in itertools.pairwise(ran):
        if earlier.finished_at is not None and later.started_at is not None:
            assert later.started_at >= earlier.finished_at, "queue_one never runs two at once"
    assert any(f.status is FireStatus.SKIPPED for f in queued), "one tick is held, the others skipped"
    # Each fire's run names the version of its agent it ran, a held tick released later too.
    for fire in [f for f in (*skipped, *queued) if f.execution_id is not None]:
        assert (await node.store.executions.get_execution(fire.execution_id)).agent_version == 1


async def test_hot_reload_updates_and_removes_config_schedules(node: Node, tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    (agents / "slow.yml").write_text(
        _agent("slow", "scripted", "{type: cron, cron: '30 6 * * *', timezone: Asia/Tokyo, overlap_policy: allow}")
    )
    (agents / "ticker.yml").unlink()

    await node.reload_agents()

    async with _client(node) as http:
        listed = (await http.get("/schedules")).json()
    assert [item["schedule"]["id"] for item in listed] == ["config:slow"]
    schedule = listed[0]["schedule"]
    assert (schedule["cron"], schedule["timezone"], schedule["overlap_policy"]) == ("30 6 * * *", "Asia/Tokyo", "allow")
    assert listed[0]["next_fire_at_local"][11:19] == "06:30:00"
