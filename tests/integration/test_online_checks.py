"""Online checks through the platform (issue 24): an agent's `checks` run on each execution
that succeeds; under `flag` the failures are recorded on the execution, which still
succeeded; under `fail` it failed with `check_failed` and the reasons and hands nothing on
down its chain; each failure is counted once on /metrics by agent, version and check, also
when the end is reached a second time (a redelivery)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.llm import LLMRequest
from agentrunner.node import Node
from agentrunner.runtime.run_endings import RunEndings
from tests.integration.conftest import node_on

FLAGGED = (
    "name: flagged\nagent_type: t\nexecution_mode: autonomous\n"
    "llm_config: {provider: scripted, model: flagged}\n"
    "checks:\n  - contains: order\n  - name: short\n    regex: '^.{0,40}$'\n  - tool_not_called: refund\n"
)
STRICT = (
    "name: strict\nagent_type: t\nexecution_mode: autonomous\n"
    "llm_config: {provider: scripted, model: strict}\n"
    "checks: [{json_subset: {status: ok}}]\non_check_failure: fail\n"
)
# Runs on each output of `strict`: it must not run when strict's answer failed its checks.
READER = (
    "name: reader\nagent_type: t\nexecution_mode: autonomous\n"
    "llm_config: {provider: scripted, model: reader}\nevent_subscriptions: [agent.output.strict]\n"
)


def _answer(request: LLMRequest) -> str:
    prompt = request.messages[-1].content
    if request.model == "strict":
        return '{"status": "ok"}' if "good" in prompt else '{"status": "broken"}'
    if request.model == "reader":
        return "read"
    return "order 42 shipped" if "good" in prompt else "nothing to say about that, and at some length too"


async def test_flag_records_failures_fail_fails_the_execution_and_each_counts_once(
    platform: tuple[str, str], tmp_path: Path
) -> None:
    bus, database_url = platform
    agents = {"flagged.yml": FLAGGED, "strict.yml": STRICT, "reader.yml": READER}
    async with node_on(bus, tmp_path, agents, script=_answer, database_url=database_url) as node:
        invoke = node.orchestrator.invoke
        passed = await _ended(node, (await invoke("flagged", {"prompt": "good"}, wait=20)).execution_id)
        flagged = await _ended(node, (await invoke("flagged", {"prompt": "bad"}, wait=20)).execution_id)
        failed = await _ended(node, (await invoke("strict", {"prompt": "bad"}, wait=20)).execution_id)
        # The same answer passing: strict's output goes on down its chain, so the reader runs.
        await _ended(node, (await invoke("strict", {"prompt": "good"}, wait=20)).execution_id)
        await _until(lambda: _reader_ran(node))
        # The end of `flagged` reached again (a worker that ran it a second time, a late
        # redelivery): refused as ended, and neither recorded nor counted again.
        endings = RunEndings(
            executions=node.store.executions,
            relay=node.relay,
            registry=node.registry,
            progress=_no_progress,
            metrics=node.metrics,
        )
        again = flagged.model_copy(update={"failed_checks": []})  # as the run's end, before its checks
        await endings.complete(again, config=node.registry.runnable("flagged"))
        shown = (await _get(node, f"/executions/{flagged.execution_id}")).json()
        metrics = _samples((await _get(node, "/metrics")).text)
        readers = (await node.store.queries.list_executions(agent="reader")).items

    assert passed.status is ExecutionStatus.SUCCEEDED
    assert passed.failed_checks == []
    assert flagged.status is ExecutionStatus.SUCCEEDED
    assert [(check.check, check.kind) for check in flagged.failed_checks] == [
        ("contains", "contains"),
        ("short", "regex"),
    ]
    assert "does not contain 'order'" in flagged.failed_checks[0].detail
    assert shown["status"] == "succeeded"
    assert [check["check"] for check in shown["failed_checks"]] == ["contains", "short"]
    assert failed.status is ExecutionStatus.FAILED
    assert failed.error is not None
    assert failed.error.code == "check_failed"
    assert "json_subset: the output differs at /status" in failed.error.message
    assert failed.output == '{"status": "broken"}'  # the answer is kept, to see what failed
    assert len(readers) == 1, "only the answer that passed its checks went on down the chain"
    version = str(flagged.agent_version)
    assert metrics == {
        ("flagged", version, "contains"): 1,
        ("flagged", version, "short"): 1,
        ("strict", str(failed.agent_version), "json_subset"): 1,
    }


STRICT_CHAT = (
    "name: strict-chat\nagent_type: t\nexecution_mode: continuous\n"
    "llm_config: {provider: scripted, model: strict-chat}\n"
    "checks: [{json_subset: {status: ok}}]\non_check_failure: fail\n"
)


async def test_a_turn_that_fails_its_checks_leaves_no_trace_in_its_session(tmp_path: Path) -> None:
    """Under `on_check_failure: fail` a continuous agent's answer that fails its checks is
    not kept in the session: the next turn's model does not see it as said (as an answer
    that never followed `output_schema` is not kept either)."""
    requests: list[LLMRequest] = []

    def chat(request: LLMRequest) -> str:
        requests.append(request)
        return '{"status": "ok"}' if "good" in request.messages[-1].content else '{"status": "broken"}'

    async with node_on("memory", tmp_path, {"strict-chat.yml": STRICT_CHAT}, script=chat) as node:
        invoke = node.orchestrator.invoke
        first = await _ended(node, (await invoke("strict-chat", {"prompt": "good 1"}, session_id="s1")).execution_id)
        refused = await _ended(node, (await invoke("strict-chat", {"prompt": "bad"}, session_id="s1")).execution_id)
        third = await _ended(node, (await invoke("strict-chat", {"prompt": "good 2"}, session_id="s1")).execution_id)

    assert (first.status, third.status) == (ExecutionStatus.SUCCEEDED, ExecutionStatus.SUCCEEDED)
    assert refused.status is ExecutionStatus.FAILED
    assert refused.error is not None
    assert refused.error.code == "check_failed"
    seen = [message.content for message in requests[-1].messages if message.role != "system"]
    assert seen == ["good 1", '{"status": "ok"}', "good 2"]


async def _no_progress(execution: Execution, payload: dict[str, Any]) -> None:
    return None


async def _get(node: Node, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=node.apps()["orchestrator"])
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
        return await http.get(path)


def _samples(text: str) -> dict[tuple[str, str, str], float]:
    """The check failures counted: (agent, version, check) -> count."""
    return {
        (sample.labels["agent"], sample.labels["version"], sample.labels["check"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "agentrunner_check_failures_total"
    }


async def _ended(node: Node, execution_id: str) -> Execution:
    async def probe() -> Execution | None:
        execution = await node.store.executions.get_execution(execution_id)
        return execution if execution.status.is_terminal else None

    found: Execution = await _until(probe)
    return found


async def _reader_ran(node: Node) -> bool | None:
    page = await node.store.queries.list_executions(agent="reader")
    return True if any(item.status.is_terminal for item in page.items) else None


async def _until(probe: Callable[[], Awaitable[Any]], timeout: float = 20) -> Any:
    async with asyncio.timeout(timeout):
        while (found := await probe()) is None:
            await asyncio.sleep(0.05)
    return found
