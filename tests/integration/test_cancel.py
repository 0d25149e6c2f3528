"""POST /executions/{id}/cancel: a queued execution never runs, a running one is stopped by
its worker, an ended one is a 409; on the in-memory bus and on RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from agentrunner.domain.execution import Execution, ExecutionError, ExecutionStatus, utcnow
from agentrunner.domain.llm import LLMRequest
from agentrunner.node import Node
from tests.integration.conftest import BUSES, node_on

AGENT = "name: slow\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: scripted, model: s}\n"
CALLS: list[str] = []


async def _slow_reply(request: LLMRequest) -> str:
    prompt = request.messages[-1].content
    CALLS.append(prompt)
    await asyncio.sleep(float(prompt))
    return f"slept {prompt}"


@pytest.fixture(params=BUSES)
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Node]:
    CALLS.clear()
    # One task at a time: the next one stays queued.
    async with node_on(
        request.param, tmp_path, {"slow.yml": AGENT}, script=_slow_reply, rabbitmq_prefetch_count=1
    ) as node:
        yield node


async def _until(node: Node, execution_id: str, *statuses: ExecutionStatus) -> Execution:
    async def poll() -> Execution:
        while (execution := await node.store.executions.get_execution(execution_id)).status not in statuses:
            await asyncio.sleep(0.02)
        return execution

    return await asyncio.wait_for(poll(), 10)


async def test_cancel_queued_running_and_ended(node: Node) -> None:
    app = node.apps()["orchestrator"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as http:
        first = (await http.post("/agents/slow/invoke", json={"task_data": {"prompt": "5"}, "wait": 0})).json()
        second = (await http.post("/agents/slow/invoke", json={"task_data": {"prompt": "0"}, "wait": 0})).json()
        await _until(node, first["execution_id"], ExecutionStatus.RUNNING)

        queued = await http.post(f"/executions/{second['execution_id']}/cancel")
        running = await http.post(f"/executions/{first['execution_id']}/cancel")
        stopped = await _until(node, first["execution_id"], ExecutionStatus.CANCELLED)
        await asyncio.sleep(0.3)  # room for the cancelled second task to run, which it must not
        second_after = await node.store.executions.get_execution(second["execution_id"])
        again = await http.post(f"/executions/{first['execution_id']}/cancel")
        unknown = await http.post("/executions/nope/cancel")

    assert (queued.status_code, queued.json()["status"]) == (200, "cancelled")
    assert queued.json()["error"]["code"] == "cancelled"
    assert (running.status_code, running.json()["status"]) == (202, "running")
    assert stopped.error is not None
    assert stopped.error.code == "cancelled"
    assert stopped.finished_at is not None
    assert second_after.status is ExecutionStatus.CANCELLED
    assert second_after.attempts == 0
    assert CALLS == ["5"], "the cancelled queued task never reached the model"
    assert again.status_code == 409
    assert unknown.status_code == 404


async def test_a_run_past_the_agents_timeout_is_stopped_and_recorded_timed_out(tmp_path: Path) -> None:
    quick = AGENT.replace("name: slow", "name: quick") + "timeout_seconds: 0.3\nretry_config: {max_retries: 0}\n"
    async with node_on("memory", tmp_path, {"quick.yml": quick}, script=_slow_reply) as node:
        accepted = await node.orchestrator.invoke("quick", {"prompt": "5"})
        ended = await _until(node, accepted.execution_id, ExecutionStatus.TIMED_OUT, ExecutionStatus.SUCCEEDED)

    assert ended.status is ExecutionStatus.TIMED_OUT
    assert ended.error is not None
    assert ended.error.code == "timed_out"
    assert "0.3 s" in ended.error.message


async def test_a_run_ended_elsewhere_keeps_that_end_and_its_late_result_is_not_recorded(node: Node) -> None:
    """The schedule watch records a run timed out when its worker has not stopped it within
    its grace (and the watchdog fails a stuck one): the worker's result, when it comes at
    last, must not overwrite that end nor announce the execution finished a second time."""
    with capture_logs() as entries:
        accepted = await node.orchestrator.invoke("slow", {"prompt": "1"})
        running = await _until(node, accepted.execution_id, ExecutionStatus.RUNNING)
        ended = running.model_copy(
            update={
                "status": ExecutionStatus.TIMED_OUT,
                "finished_at": utcnow(),
                "error": ExecutionError(code="timed_out", message="its worker did not stop it in time"),
            }
        )
        await node.store.executions.save_execution(ended, only_if=frozenset({ExecutionStatus.RUNNING}))

        async def late_result_dropped() -> Mapping[str, object]:
            while True:
                for entry in entries:
                    if entry.get("execution_id") == accepted.execution_id and "ended elsewhere" in entry["event"]:
                        return entry
                await asyncio.sleep(0.02)

        dropped = await asyncio.wait_for(late_result_dropped(), 10)

    after = await node.store.executions.get_execution(accepted.execution_id)
    assert CALLS == ["1"], "the run went on to its end"
    assert dropped["result"] == "succeeded"
    assert after.status is ExecutionStatus.TIMED_OUT
    assert after.error is not None
    assert after.error.message == "its worker did not stop it in time"


async def test_a_cancel_that_comes_before_the_attempt_begins_is_kept_for_it(node: Node) -> None:
    """A worker marks an execution running, then begins its attempt: a cancel asked in
    between finds it running, so the orchestrator asks the workers, and none has the attempt
    yet. The request is kept for it (it was answered 202, and was dropped before): the
    attempt never runs. The second execution here is put in that state by the store's own
    start, while the worker is busy with the first (one task at a time)."""
    first = await node.orchestrator.invoke("slow", {"prompt": "1"})
    second = await node.orchestrator.invoke("slow", {"prompt": "0"})
    await _until(node, first.execution_id, ExecutionStatus.RUNNING)
    await node.store.executions.start_execution(second.execution_id, worker="w", provider="scripted", model="s")

    asked = await node.orchestrator.cancel(second.execution_id)
    stopped = await _until(node, second.execution_id, ExecutionStatus.CANCELLED, ExecutionStatus.SUCCEEDED)
    await _until(node, first.execution_id, ExecutionStatus.SUCCEEDED)

    assert asked.status is ExecutionStatus.RUNNING  # asked of its worker, not ended at once
    assert stopped.status is ExecutionStatus.CANCELLED
    assert stopped.error is not None
    assert stopped.error.code == "cancelled"
    assert CALLS == ["1"], "the cancelled attempt never reached the model"
