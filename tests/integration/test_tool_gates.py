"""A tool call that waits for a human (issue 22, items 3 and 4): an approval gate
(`tools[].requires_approval`) and a call a kill cut short that is not safe to repeat
(`on_unknown_tool_outcome`). The execution waits as `waiting_approval` holding no worker,
survives a restart, and each answer does what it says, once; another tenant cannot answer."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.domain.errors import StateNotFoundError
from agentrunner.domain.llm import LLMRequest
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import node_on
from tests.integration.test_durable_agents import (
    FINAL,
    CountingTools,
    _orchestrator,
    _vendor,
    _wait_for,
    embedded_process,
    embedded_ready,
)
from tests.ports import free_port


def _gated(url: str) -> str:
    """An agent whose only tool (the counting MCP server's `kit__step`) needs approval, one
    execution at a time."""
    return (
        "name: gated\nagent_type: t\nexecution_mode: autonomous\n"
        "llm_config: {provider: scripted, model: s, max_attempts: 1}\n"
        "retry_config: {max_retries: 0}\nlimits: {max_concurrency: 1}\n"
        f"tools:\n  - {{name: kit, type: mcp, url: '{url}', timeout_seconds: 60, requires_approval: true}}\n"
    )


LONG_NOTE = "note " * 4000


def _model(asked: Counter[str]) -> Callable[[LLMRequest], Any]:
    """The scripted model: to "hello" it answers at once; otherwise it asks `kit__step(1)`
    (`kit__step("one")` to "wrong arguments", with a 20 kB `note` to "long arguments"), then
    answers with what the call returned. Counts its calls per prompt in `asked`."""

    def answer(request: LLMRequest) -> Any:
        prompt = next(m.content for m in request.messages if m.role == "user")
        asked[prompt] += 1
        if prompt == "hello":
            return "hi"
        results = [m.content for m in request.messages if m.role == "tool"]
        if not results:
            n: Any = "one" if prompt == "wrong arguments" else 1
            arguments = {"n": n} | ({"note": LONG_NOTE} if prompt == "long arguments" else {})
            return {"tool_calls": [{"id": "c1", "name": "kit__step", "arguments": arguments}]}
        return "done: " + ", ".join(results)

    return answer


async def _status(http: httpx.AsyncClient, execution_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        record: dict[str, Any] = (await http.get(f"/executions/{execution_id}")).json()
        if record.get("status") in statuses:
            return record
        assert asyncio.get_running_loop().time() < deadline, record
        await asyncio.sleep(0.05)


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=[pytest.mark.postgres, pytest.mark.rabbitmq])])
def deployment(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """(bus, node settings): one message at a time per consumer; on RabbitMQ, the state in
    PostgreSQL. Sync so it can pull in the async `postgres_url`."""
    bus: str = request.param
    settings: dict[str, Any] = {"rabbitmq_prefetch_count": 1}
    if bus == "rabbitmq":
        settings["database_url"] = request.getfixturevalue("postgres_url")
    return bus, settings


async def test_a_gated_call_waits_holding_no_worker_survives_a_restart_and_runs_once_approved(
    tmp_path: Path, deployment: tuple[str, dict[str, Any]]
) -> None:
    asked: Counter[str] = Counter()
    bus, settings = deployment
    with CountingTools() as tools:
        agents = {"gated.yml": _gated(tools.url)}
        async with (
            node_on(bus, tmp_path, agents, script=_model(asked), **settings) as node,
            _orchestrator(node) as http,
        ):
            answer = await http.post("/agents/gated/invoke", json={"task_data": {"prompt": "gated"}, "wait": 0})
            execution_id = answer.json()["execution_id"]
            waiting = await _status(http, execution_id, "waiting_approval", "succeeded", "failed")
            # The pause holds no worker and no slot: another execution of the agent (one at a
            # time, one message at a time) runs to its end meanwhile.
            other = await http.post("/agents/gated/invoke", json={"task_data": {"prompt": "hello"}, "wait": 30})
        calls_before_approval = dict(tools.calls)

        async with (
            node_on(bus, tmp_path, agents, script=_model(asked), **settings) as node,
            _orchestrator(node) as http,
        ):
            after_restart = (await http.get(f"/executions/{execution_id}")).json()
            approvals = await asyncio.gather(*(http.post(f"/executions/{execution_id}/approve") for _ in range(2)))
            finished = await _status(http, execution_id, "succeeded", "failed")
            again = await http.post(f"/executions/{execution_id}/approve")

    assert waiting["status"] == "waiting_approval", waiting
    pending = waiting["pending_tool_call"]
    assert (pending["reason"], pending["tool"], pending["arguments"], pending["seq"]) == (
        "approval",
        "kit__step",
        {"n": 1},
        2,
    )
    assert pending["answer"] is None
    assert calls_before_approval == {}
    assert other.status_code == 200
    assert other.json()["output"] == "hi"
    assert after_restart["status"] == "waiting_approval"
    assert after_restart["pending_tool_call"] == pending
    assert sorted(a.status_code for a in approvals) == [202, 409]
    assert finished["status"] == "succeeded", finished
    assert finished["output"] == "done: step 1"
    assert finished["pending_tool_call"] is None
    assert dict(tools.calls) == {1: 1}  # approved twice at once: run once
    assert asked["gated"] == 2  # the answer that asked for the call came from the journal
    assert [(s["kind"], s["replayed"]) for s in finished["steps"]] == [
        ("model", True),
        ("tool", False),
        ("model", False),
    ]
    assert again.status_code == 409


async def test_an_invocation_that_waits_is_answered_once_a_human_is_needed_not_at_the_end_of_its_wait(
    tmp_path: Path, deployment: tuple[str, dict[str, Any]]
) -> None:
    """Nothing happens to an execution that waits for a human until one answers: a caller
    who waits for it (and the retry of that call, by its Idempotency-Key) is answered then,
    202 with `waiting_approval`, not when its `wait` runs out."""
    asked: Counter[str] = Counter()
    bus, settings = deployment
    wait = 60.0
    task = {"task_data": {"prompt": "gated"}, "wait": wait}
    with CountingTools() as tools:
        agents = {"gated.yml": _gated(tools.url)}
        async with (
            node_on(bus, tmp_path, agents, script=_model(asked), **settings) as node,
            _orchestrator(node) as http,
        ):
            clock = asyncio.get_running_loop().time
            began = clock()
            answer = await http.post("/agents/gated/invoke", json=task, headers={"Idempotency-Key": "k1"}, timeout=90)
            answered_after = clock() - began
            began = clock()
            retried = await http.post("/agents/gated/invoke", json=task, headers={"Idempotency-Key": "k1"}, timeout=90)
            retry_answered_after = clock() - began

    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "waiting_approval"
    assert retried.status_code == 202, retried.text
    assert retried.json()["execution_id"] == answer.json()["execution_id"]
    assert answered_after < wait / 2  # not held to the end of its wait
    assert retry_answered_after < wait / 2
    assert dict(tools.calls) == {}


async def test_an_eval_case_whose_execution_waits_for_a_human_says_so_without_waiting_out_its_timeout(
    tmp_path: Path,
) -> None:
    asked: Counter[str] = Counter()
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "gated.yml").write_text(
        "agent: gated\ncases:\n  - name: asks\n    task_data: {prompt: gated}\n    expect:\n      - contains: done\n"
    )
    with CountingTools() as tools:
        agents = {"gated.yml": _gated(tools.url)}
        async with node_on("memory", tmp_path, agents, script=_model(asked)) as node, _orchestrator(node) as http:
            started = (await http.post("/evals/runs", json={"suite": "gated"})).json()
            deadline = asyncio.get_running_loop().time() + 30  # well inside the case's timeout (300 s)
            while (run := (await http.get(f"/evals/runs/{started['run_id']}")).json())["status"] == "running":
                assert asyncio.get_running_loop().time() < deadline, run
                await asyncio.sleep(0.1)

    [case] = run["cases"]
    assert case["passed"] is False
    assert case["error"] == "the execution waits for a human before a tool call, which an eval case does not answer"
    assert dict(tools.calls) == {}


async def test_a_denied_call_is_not_made_and_the_model_reads_why(tmp_path: Path) -> None:
    asked: Counter[str] = Counter()
    with CountingTools() as tools:
        agents = {"gated.yml": _gated(tools.url)}
        async with node_on("memory", tmp_path, agents, script=_model(asked)) as node, _orchestrator(node) as http:
            answer = await http.post("/agents/gated/invoke", json={"task_data": {"prompt": "gated"}, "wait": 0})
            execution_id = answer.json()["execution_id"]
            await _status(http, execution_id, "waiting_approval")
            denied = await http.post(f"/executions/{execution_id}/deny", json={"reason": "not on a Friday"})
            finished = await _status(http, execution_id, "succeeded", "failed")

    assert denied.status_code == 202
    assert finished["status"] == "succeeded", finished
    assert finished["output"] == "done: error: a human refused this call, it was not made: not on a Friday"
    assert dict(tools.calls) == {}
    [call] = finished["tool_calls"]
    assert call["error"].startswith("a human refused this call")
    assert [(s["kind"], s["status"]) for s in finished["steps"]] == [
        ("model", "succeeded"),
        ("tool", "failed"),
        ("model", "succeeded"),
    ]


def _journaled(url: str, *, policy: str = "ask", idempotent: bool | None = None) -> str:
    """The agent of the durable tests (four `kit__step` calls in sequence, on the OpenAI wire
    fake), its kit not safe to repeat unless `idempotent`, with `on_unknown_tool_outcome: policy`."""
    declared = "" if idempotent is None else f", idempotent: {str(idempotent).lower()}"
    return (
        "name: journaled\nagent_type: t\nexecution_mode: autonomous\n"
        "llm_config: {provider: openai, model: gpt-4o, max_attempts: 1}\n"
        f"retry_config: {{max_retries: 0}}\non_unknown_tool_outcome: {policy}\n"
        f"tools:\n  - {{name: kit, type: mcp, url: '{url}', timeout_seconds: 60{declared}}}\n"
    )


async def _killed_during_call_3(
    tmp_path: Path, agent: str, tools: CountingTools, fake: FakeOpenAI, session_id: str | None = None
) -> str:
    """Run `agent` (in session `session_id`, if any) in an embedded `agentrunner up` killed
    (-9) during tool call 3; the id of its execution, left with step 3 started and no outcome."""
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "journaled.yml").write_text(agent)
    port = free_port()
    process = embedded_process(tmp_path, fake, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            await embedded_ready(http, process, tmp_path)
            task = {"task_data": {"prompt": "go"}, "wait": 0} | ({"session_id": session_id} if session_id else {})
            answer = await http.post("/agents/journaled/invoke", json=task)
            await _wait_for(lambda: tools.calls[3] == 1, "tool call 3 never came")
            return str(answer.json()["execution_id"])
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        tools.release()  # the held call ends in a server whose client is gone


def _restarted(tmp_path: Path, agent: str, fake: FakeOpenAI) -> Any:
    return node_on(
        "memory", tmp_path, {"journaled.yml": agent}, openai_api_key=fake.api_key, openai_base_url=fake.base_url
    )


ANSWERS = {
    # answer -> (final status, tool calls by step, output)
    "happened": ({"happened": True, "result": "step 3 (done, said a human)"}, "succeeded", {1: 1, 2: 1, 3: 1, 4: 1}),
    "again": ({"again": True}, "succeeded", {1: 1, 2: 1, 3: 2, 4: 1}),
    "fail": ({"fail": True}, "failed", {1: 1, 2: 1, 3: 1}),
}


@pytest.mark.parametrize("answer", list(ANSWERS))
async def test_a_call_killed_under_way_and_not_safe_to_repeat_waits_and_each_answer_does_what_it_says(
    tmp_path: Path, answer: str
) -> None:
    body, status, calls = ANSWERS[answer]
    with CountingTools(hold=3) as tools, FakeOpenAI(script=_vendor) as fake:
        agent = _journaled(tools.url)
        execution_id = await _killed_during_call_3(tmp_path, agent, tools, fake)
        async with _restarted(tmp_path, agent, fake) as node, _orchestrator(node) as http:
            waiting = await _status(http, execution_id, "waiting_approval", "succeeded", "failed")
            model_calls_waiting = len(fake.requests)
            wrong = await http.post(f"/executions/{execution_id}/approve")  # not an approval question
            answered = await http.post(f"/executions/{execution_id}/tool-outcome", json=body)
            finished = await _status(http, execution_id, "succeeded", "failed")

    assert waiting["status"] == "waiting_approval", waiting
    pending = waiting["pending_tool_call"]
    assert (pending["reason"], pending["tool"], pending["arguments"]) == ("tool_outcome_unknown", "kit__step", {"n": 3})
    assert model_calls_waiting == 3  # nothing was asked again while it waited
    assert wrong.status_code == 409
    assert answered.status_code == 202
    assert finished["status"] == status, finished
    assert dict(tools.calls) == calls
    if answer == "happened":  # the model read the human's result, never a made-up one
        assert finished["output"] == "done: step 1, step 2, step 3 (done, said a human), step 4"
    elif answer == "again":
        assert finished["output"] == FINAL
    else:
        assert finished["error"]["code"] == "tool_outcome_unknown"
        assert len(fake.requests) == 3


async def test_a_continuous_turn_killed_inside_a_call_not_safe_to_repeat_waits_and_lands_once_answered(
    tmp_path: Path,
) -> None:
    """The same for a continuous session: its turn waits for the human's answer (the session
    keeps nothing of it meanwhile), then lands in the session once, call 3 made once."""
    with CountingTools(hold=3) as tools, FakeOpenAI(script=_vendor) as fake:
        agent = _journaled(tools.url).replace("execution_mode: autonomous", "execution_mode: continuous")
        execution_id = await _killed_during_call_3(tmp_path, agent, tools, fake, session_id="s-1")
        async with _restarted(tmp_path, agent, fake) as node, _orchestrator(node) as http:
            waiting = await _status(http, execution_id, "waiting_approval", "succeeded", "failed")
            with pytest.raises(StateNotFoundError):  # nothing of the turn is kept while it waits
                await node.store.sessions.load_state("journaled", "s-1")
            body = ANSWERS["happened"][0]
            answered = await http.post(f"/executions/{execution_id}/tool-outcome", json=body)
            finished = await _status(http, execution_id, "succeeded", "failed")
            history = (await node.store.sessions.load_state("journaled", "s-1")).history

    assert waiting["pending_tool_call"]["reason"] == "tool_outcome_unknown"
    assert answered.status_code == 202
    assert finished["output"] == "done: step 1, step 2, step 3 (done, said a human), step 4"
    assert dict(tools.calls) == {1: 1, 2: 1, 3: 1, 4: 1}
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[-1]["content"] == finished["output"]


@pytest.mark.parametrize(
    ("policy", "idempotent", "status", "calls"),
    [
        ("ask", True, "succeeded", {1: 1, 2: 1, 3: 2, 4: 1}),  # safe to repeat: simply run again
        ("retry", None, "succeeded", {1: 1, 2: 1, 3: 2, 4: 1}),
        ("fail", None, "failed", {1: 1, 2: 1, 3: 1}),
    ],
    ids=["repeatable", "retry", "fail"],
)
async def test_a_call_killed_under_way_is_run_again_or_failed_as_the_policy_says_without_asking(
    tmp_path: Path, policy: str, idempotent: bool | None, status: str, calls: dict[int, int]
) -> None:
    with CountingTools(hold=3) as tools, FakeOpenAI(script=_vendor) as fake:
        agent = _journaled(tools.url, policy=policy, idempotent=idempotent)
        execution_id = await _killed_during_call_3(tmp_path, agent, tools, fake)
        async with _restarted(tmp_path, agent, fake) as node, _orchestrator(node) as http:
            finished = await _status(http, execution_id, "succeeded", "failed", "waiting_approval")

    assert finished["status"] == status, finished
    assert dict(tools.calls) == calls
    if status == "failed":
        assert finished["error"]["code"] == "tool_outcome_unknown"
    else:
        assert finished["output"] == FINAL


ALICE_KEY = "key-alice-0123456789abcdef0123456789"
MALLORY_KEY = "key-mallory-0123456789abcdef01234567"


async def test_only_the_owner_answers_once_with_a_well_formed_answer(tmp_path: Path) -> None:
    asked: Counter[str] = Counter()
    with CountingTools() as tools:
        async with (
            node_on(
                "memory",
                tmp_path,
                {"gated.yml": _gated(tools.url)},
                script=_model(asked),
                enable_api_auth=True,
                api_keys=f"alice:{ALICE_KEY},mallory:{MALLORY_KEY}",
            ) as node,
            _orchestrator(node, **{"X-API-Key": ALICE_KEY}) as alice,
            _orchestrator(node, **{"X-API-Key": MALLORY_KEY}) as mallory,
        ):
            answer = await alice.post("/agents/gated/invoke", json={"task_data": {"prompt": "gated"}, "wait": 0})
            execution_id = answer.json()["execution_id"]
            await _status(alice, execution_id, "waiting_approval")
            missing = await mallory.post("/executions/no-such-execution/approve")
            stolen = [
                await mallory.post(f"/executions/{execution_id}/approve"),
                await mallory.post(f"/executions/{execution_id}/deny", json={"reason": "mine now"}),
                await mallory.post(f"/executions/{execution_id}/tool-outcome", json={"again": True}),
            ]
            malformed = [
                await alice.post(f"/executions/{execution_id}/deny", json={"reason": "x" * 2001}),
                await alice.post(f"/executions/{execution_id}/deny", json={"reason": 5}),
                await alice.post(f"/executions/{execution_id}/deny", json={"reason": "no", "approve": True}),
                await alice.post(f"/executions/{execution_id}/tool-outcome", json={"happened": "yes"}),
                await alice.post(f"/executions/{execution_id}/tool-outcome", json={"happened": 1}),
                await alice.post(f"/executions/{execution_id}/tool-outcome", json={"happened": True, "again": True}),
                await alice.post(f"/executions/{execution_id}/tool-outcome", json={}),
                await alice.post(f"/executions/{execution_id}/tool-outcome", json={"again": True, "result": "r"}),
                await alice.post(
                    f"/executions/{execution_id}/tool-outcome", json={"happened": True, "result": "x" * 100_001}
                ),
            ]
            wrong_question = await alice.post(f"/executions/{execution_id}/tool-outcome", json={"again": True})
            still = (await alice.get(f"/executions/{execution_id}")).json()
            approved = await alice.post(f"/executions/{execution_id}/approve")
            finished = await _status(alice, execution_id, "succeeded", "failed")
            second = await alice.post(f"/executions/{execution_id}/approve")
            denied_late = await alice.post(f"/executions/{execution_id}/deny")

    assert [r.status_code for r in stolen] == [404, 404, 404]
    assert {r.json()["error"]["code"] for r in stolen} == {missing.json()["error"]["code"]}
    assert all("kit__step" not in r.text for r in stolen)
    assert [r.status_code for r in malformed] == [422] * len(malformed)
    assert wrong_question.status_code == 409
    assert still["status"] == "waiting_approval"
    assert still["pending_tool_call"]["answer"] is None
    assert approved.status_code == 202
    assert finished["status"] == "succeeded", finished
    assert dict(tools.calls) == {1: 1}
    assert (second.status_code, denied_late.status_code) == (409, 409)


async def test_a_waiting_execution_is_cancelled_at_once(tmp_path: Path) -> None:
    asked: Counter[str] = Counter()
    with CountingTools() as tools:
        agents = {"gated.yml": _gated(tools.url)}
        async with node_on("memory", tmp_path, agents, script=_model(asked)) as node, _orchestrator(node) as http:
            answer = await http.post("/agents/gated/invoke", json={"task_data": {"prompt": "gated"}, "wait": 0})
            execution_id = answer.json()["execution_id"]
            await _status(http, execution_id, "waiting_approval")
            cancelled = await http.post(f"/executions/{execution_id}/cancel")
            approved = await http.post(f"/executions/{execution_id}/approve")

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert approved.status_code == 409
    assert dict(tools.calls) == {}


async def test_a_scheduled_run_waiting_past_its_timeout_is_timed_out(tmp_path: Path) -> None:
    asked: Counter[str] = Counter()
    with CountingTools() as tools:
        agent = _gated(tools.url).replace(
            "execution_mode: autonomous", "execution_mode: scheduled\nschedule_config: {type: cron, cron: '0 0 1 1 *'}"
        )
        settings = {"scheduler_watch_seconds": 0.1, "scheduler_refresh_seconds": 0.5}
        async with node_on("memory", tmp_path, {"gated.yml": agent}, script=_model(asked), **settings) as node:
            transport = httpx.ASGITransport(app=node.apps()["scheduler"])
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://s") as scheduler,
                _orchestrator(node) as http,
            ):
                body = {"agent": "gated", "interval_seconds": 3600, "task_data": {"prompt": "gated"}}
                await scheduler.post("/schedules", json={**body, "id": "gated-run", "timeout_seconds": 1})
                triggered = (await scheduler.post("/schedules/gated-run/trigger")).json()
                execution_id = triggered["execution_id"]
                waiting = await _status(http, execution_id, "waiting_approval", "succeeded", "failed", "timed_out")
                ended = await _status(http, execution_id, "timed_out", "succeeded", "failed", "cancelled", timeout=15)

    assert waiting["status"] == "waiting_approval", waiting
    assert ended["status"] == "timed_out", ended
    assert ended["error"]["code"] == "timed_out"
    assert dict(tools.calls) == {}


async def test_a_session_waiting_for_a_human_is_busy(tmp_path: Path) -> None:
    asked: Counter[str] = Counter()
    with CountingTools() as tools:
        agent = _gated(tools.url).replace(
            "execution_mode: autonomous", "execution_mode: continuous\ncontinuous_config: {on_busy: reject}"
        )
        async with (
            node_on("memory", tmp_path, {"gated.yml": agent}, script=_model(asked)) as node,
            _orchestrator(node) as http,
        ):
            first = await http.post(
                "/agents/gated/invoke", json={"task_data": {"prompt": "gated"}, "session_id": "s-1", "wait": 0}
            )
            await _status(http, first.json()["execution_id"], "waiting_approval")
            second = await http.post(
                "/agents/gated/invoke", json={"task_data": {"prompt": "hello"}, "session_id": "s-1", "wait": 0}
            )

    assert second.status_code == 409
    assert second.json()["error"]["code"] == "session_busy"


async def test_a_gated_call_that_would_not_be_made_asks_nobody(tmp_path: Path) -> None:
    asked: Counter[str] = Counter()
    with CountingTools() as tools:
        agents = {"gated.yml": _gated(tools.url)}
        async with node_on("memory", tmp_path, agents, script=_model(asked)) as node, _orchestrator(node) as http:
            task = {"task_data": {"prompt": "wrong arguments"}, "wait": 30}
            finished = (await http.post("/agents/gated/invoke", json=task)).json()

    assert finished["status"] == "succeeded", finished
    assert finished["output"].startswith("done: error: invalid arguments")
    assert dict(tools.calls) == {}


async def test_a_continuous_turn_waits_then_lands_in_its_session_once(tmp_path: Path) -> None:
    asked: Counter[str] = Counter()
    with CountingTools() as tools:
        agent = _gated(tools.url).replace("execution_mode: autonomous", "execution_mode: continuous")
        async with (
            node_on("memory", tmp_path, {"gated.yml": agent}, script=_model(asked)) as node,
            _orchestrator(node) as http,
        ):
            task = {"task_data": {"prompt": "gated"}, "session_id": "s-1", "wait": 0}
            execution_id = (await http.post("/agents/gated/invoke", json=task)).json()["execution_id"]
            await _status(http, execution_id, "waiting_approval")
            with pytest.raises(StateNotFoundError):  # nothing of the turn is kept while it waits
                await node.store.sessions.load_state("gated", "s-1")
            await http.post(f"/executions/{execution_id}/approve")
            finished = await _status(http, execution_id, "succeeded", "failed")
            history = (await node.store.sessions.load_state("gated", "s-1")).history

    assert finished["output"] == "done: step 1"
    assert [(m["role"], m["content"]) for m in history] == [("user", "gated"), ("assistant", "done: step 1")]
    assert dict(tools.calls) == {1: 1}
    assert asked["gated"] == 2


async def test_the_list_shows_the_call_an_execution_waits_on_cut_to_a_preview(tmp_path: Path) -> None:
    asked: Counter[str] = Counter()
    with CountingTools() as tools:
        agents = {"gated.yml": _gated(tools.url)}
        async with node_on("memory", tmp_path, agents, script=_model(asked)) as node, _orchestrator(node) as http:
            task = {"task_data": {"prompt": "long arguments"}, "wait": 0}
            execution_id = (await http.post("/agents/gated/invoke", json=task)).json()["execution_id"]
            whole = await _status(http, execution_id, "waiting_approval")
            listed = (await http.get("/executions", params={"status": "waiting_approval"})).json()["items"]

    [item] = listed
    pending = item["pending_tool_call"]
    assert item["truncated"] is True
    assert len(json.dumps(pending["arguments"], separators=(",", ":")).encode()) <= 2048
    assert pending["arguments"]["n"] == 1
    assert LONG_NOTE.startswith(pending["arguments"]["note"])
    assert (pending["tool"], pending["reason"], pending["call_id"]) == ("kit__step", "approval", "c1")
    assert whole["pending_tool_call"]["arguments"] == {"n": 1, "note": LONG_NOTE}  # the detail has it whole
