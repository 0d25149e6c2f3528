"""The Python client (`agentrunner.client`) against a real `agentrunner up`: every method,
blocking and async (a wait ends at its timeout, or where a human is needed); a call
retried across restarts of the node runs once; a stream cut mid-answer resumes with
nothing lost or repeated; errors carry the API's codes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agentrunner.client import (
    Accepted,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    ExecutionDetail,
    InvokeResult,
    NotFoundError,
    StreamEvent,
    WaitTimeoutError,
)
from agentrunner.domain.execution import ExecutionStatus
from agentrunner.domain.plan import PlanRunStatus
from tests.e2e.platform import RunningPlatform, restart_platform, start_platform
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.e2e

KEY = "client-key-0123456789abcdef0123456789ab"
SLOW_SECONDS = 3.0
STREAMED = "one two three four five six seven eight"
# The streamer's model starts its answer once the test's stream is open: text streamed before
# a client connects reaches it from the journal only, once the step has ended.
STREAM_OPENED = threading.Event()
PLAN = {"steps": [{"id": "draft", "agent": "writer", "instruction": "draft for the right market"}]}


def _agent(name: str, model: str, extra: str = "") -> str:
    head = f"name: {name}\nagent_type: t\nexecution_mode: autonomous\n"
    return head + f"llm_config: {{provider: openai, model: {model}}}\n{extra}"


AGENTS = {
    "echo.yml": (
        "name: echo\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
        "event_subscriptions: [client.order.placed]\n"
    ),
    "slow.yml": _agent("slow", "slow"),
    "streamer.yml": _agent("streamer", "streamer"),
    "writer.yml": _agent("writer", "writer"),
    "gated.yml": _agent("gated", "gated", "tools:\n  - {name: current_time, requires_approval: true}\n"),
    "team.yml": (
        "name: team\nagent_type: t\nexecution_mode: collaborative\nllm_config: {provider: openai, model: coordinator}\n"
        "collaborative_config: {preferred_collaborators: [writer], max_plan_steps: 1, require_plan_approval: true}\n"
    ),
}


def _vendor() -> FakeOpenAI:
    """Answers like OpenAI: `slow` after a while, `streamer` word by word, `gated` asks for
    the clock (a call that waits for approval), the team's plan as a tool call, the writer
    asks which market until the prompt carries the answer."""

    def answer(body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
        model = body["model"]
        if model == "slow":
            time.sleep(SLOW_SECONDS)
            return "slow done", None
        if model == "streamer":
            STREAM_OPENED.wait(30)
            return STREAMED, None
        if model == "gated":
            told = [str(m["content"]) for m in body["messages"] if m["role"] == "tool"]
            return (f"told: {told[0]}", None) if told else ("", ("current_time", {}))
        if any(tool["function"]["name"] == "submit_plan" for tool in body.get("tools", [])):
            return "", ("submit_plan", PLAN)
        if model == "writer":
            prompt = json.dumps(body["messages"])
            if "Their answer:" in prompt:
                return "written for " + prompt.rsplit("Their answer:", 1)[1].split('"')[0].strip(), None
            return "", ("ask_human", {"question": "Which market?", "kind": "choice", "options": ["EU", "US"]})
        return "the team's post", None

    return FakeOpenAI(api_key="sk-client", script=answer)


def _start(workdir: Path, fake: FakeOpenAI) -> RunningPlatform:
    (workdir / "agents").mkdir(exist_ok=True)
    for name, text in AGENTS.items():
        (workdir / "agents" / name).write_text(text)
    env = {
        "ENABLE_API_AUTH": "true",
        "API_KEYS": f"team-a:{KEY}",
        "OPENAI_API_KEY": fake.api_key,
        "OPENAI_BASE_URL": fake.base_url,
        "COLLABORATIVE_POLL_SECONDS": "0.2",
    }
    return start_platform(workdir, env)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with _vendor() as vendor:
        yield vendor


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI) -> Iterator[RunningPlatform]:
    running = _start(tmp_path_factory.mktemp("client"), fake)
    yield running
    assert running.stop() == 0, running.log_path.read_text()[-3000:]


@pytest.fixture
def client(platform: RunningPlatform) -> Iterator[Client]:
    with Client(platform.url("orchestrator"), api_key=KEY) as opened:
        yield opened


T = TypeVar("T")


def _until(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {value}"
        time.sleep(0.1)


def test_invoke_waits_for_the_typed_execution_or_returns_it_accepted(client: Client) -> None:
    ended = client.invoke("echo", "hello")
    accepted = client.invoke("echo", task_data={"prompt": "later", "lang": "fr"}, wait=False)
    waited = client.wait(accepted.execution_id, timeout=30)
    detail = client.get_execution(accepted.execution_id)

    assert isinstance(ended, InvokeResult)
    assert (ended.status, ended.output) == (ExecutionStatus.SUCCEEDED, "hello")
    assert isinstance(accepted, Accepted)
    assert (waited.status, waited.output) == (ExecutionStatus.SUCCEEDED, "later")
    assert isinstance(detail, ExecutionDetail)
    assert detail.input == {"prompt": "later", "lang": "fr"}
    assert [step.kind for step in detail.steps] == ["model"]


def test_list_pages_through_cursors_and_filters(client: Client) -> None:
    made = {client.invoke("echo", f"page {n}").execution_id for n in range(3)}

    first = client.list_executions_page(agent="echo", limit=1)
    listed = [item.execution_id for item in client.list_executions(agent="echo", page_size=1)]
    succeeded = list(client.list_executions(agent="echo", status="succeeded", page_size=2))

    assert first.next_cursor is not None
    assert len(first.items) == 1
    assert made <= set(listed)
    assert len(listed) == len(set(listed)), "no execution twice across pages"
    assert all(item.status is ExecutionStatus.SUCCEEDED and item.agent == "echo" for item in succeeded)


def test_cancel_stops_a_running_execution(client: Client) -> None:
    accepted = client.invoke("slow", "take your time", wait=False)
    with pytest.raises(WaitTimeoutError) as unfinished:
        client.wait(accepted.execution_id, timeout=0.5)

    cancelled = client.cancel(accepted.execution_id)
    ended = client.wait(accepted.execution_id, timeout=30)

    assert unfinished.value.execution_id == accepted.execution_id
    assert cancelled.execution_id == accepted.execution_id
    # Cancelled at once when still queued; a running one's worker was asked to stop it.
    assert cancelled.status in {ExecutionStatus.CANCELLED, ExecutionStatus.QUEUED, ExecutionStatus.RUNNING}
    assert ended.status is ExecutionStatus.CANCELLED
    with pytest.raises(ConflictError) as refused:
        client.cancel(accepted.execution_id)
    assert refused.value.status == 409


def test_publish_runs_the_subscribed_agent(client: Client) -> None:
    published = client.publish("client.order.placed", {"prompt": "order 42"})

    found = _until(
        lambda: [e for e in client.list_executions(agent="echo") if e.input.get("prompt") == "order 42"],
        lambda runs: bool(runs) and runs[0].status is ExecutionStatus.SUCCEEDED,
    )

    assert published.topic == "client.order.placed"
    assert found[0].trace_id == published.trace_id


def test_a_gated_tool_call_is_returned_waiting_then_approved_or_denied(client: Client) -> None:
    waiting = client.invoke("gated", "what time is it", timeout=60)
    approved = client.approve(waiting.execution_id)
    after_approval = client.wait(waiting.execution_id, timeout=60)
    other = client.invoke("gated", "and now?", timeout=60)
    denied = client.deny(other.execution_id, reason="not now")
    after_denial = client.wait(other.execution_id, timeout=60)

    assert waiting.status is ExecutionStatus.WAITING_APPROVAL
    assert waiting.pending_tool_call is not None
    assert waiting.pending_tool_call.tool == "current_time"
    assert approved.status is ExecutionStatus.QUEUED
    assert after_approval.status is ExecutionStatus.SUCCEEDED
    assert denied.status is ExecutionStatus.QUEUED
    assert after_denial.status is ExecutionStatus.SUCCEEDED
    assert "not now" in (after_denial.output or "")
    with pytest.raises(ConflictError):  # it waits on no tool call now
        client.tool_outcome(other.execution_id, again=True)


def test_a_plan_is_approved_its_question_answered_and_another_plan_rejected(client: Client) -> None:
    run_id = client.invoke("team", "a launch post", wait=False).execution_id
    held = _until(lambda: client.get_plan_run(run_id), lambda run: run.status is PlanRunStatus.AWAITING_APPROVAL)
    client.approve_plan(run_id)
    asking = _until(lambda: client.get_plan_run(run_id), lambda run: run.status is PlanRunStatus.NEEDS_CLARIFICATION)
    question = next(c for c in asking.clarifications if c.status == "pending")
    client.answer_clarification(run_id, question.id, "EU", answered_by="the client test")
    done = _until(lambda: client.get_plan_run(run_id), lambda run: run.status.is_terminal)
    other_id = client.invoke("team", "another post", wait=False).execution_id
    _until(lambda: client.get_plan_run(other_id), lambda run: run.status is PlanRunStatus.AWAITING_APPROVAL)
    rejected = client.reject_plan(other_id, reason="not this one")

    assert held.plan is not None
    assert [step.agent for step in held.plan.steps] == ["writer"]
    assert done.status is PlanRunStatus.SUCCEEDED
    assert done.steps[0].output == "written for EU"
    assert rejected.status is PlanRunStatus.REJECTED
    assert {run.id for run in client.list_plan_runs(agent="team")} >= {run_id, other_id}


def test_errors_carry_the_api_code_and_status(platform: RunningPlatform, client: Client) -> None:
    with pytest.raises(NotFoundError) as unknown:
        client.invoke("no-such-agent", "x")
    with pytest.raises(NotFoundError) as missing:
        client.get_execution("no-such-execution")
    with pytest.raises(BadRequestError) as empty:
        client.invoke("echo", task_data={})
    stranger = Client(platform.url("orchestrator"), api_key="wrong-key-0123456789abcdef0123456789")
    with stranger, pytest.raises(AuthenticationError) as refused:
        stranger.agents()

    assert (unknown.value.status, unknown.value.code) == (404, "agent_not_found")
    assert unknown.value.trace_id
    assert missing.value.code == "execution_not_found"
    assert (empty.value.status, empty.value.code) == (422, "validation_error")
    assert empty.value.details is not None
    assert empty.value.details["fields"]
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")


def test_agents_are_typed(client: Client) -> None:
    listed = {agent.name: agent for agent in client.agents()}
    gated = client.agent("gated")

    assert listed["echo"].status == "available"
    assert gated.offered_tools == ["current_time"]


class _CuttableProxy:
    """A TCP proxy on loopback whose connections the test can cut (as a network drop would)."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.connections = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            with self._lock:
                self.connections += 1
                self._open += [downstream, upstream]
            for source, target in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for side in (source, target):
                with contextlib.suppress(OSError):
                    side.shutdown(socket.SHUT_RDWR)
            source.close()

    def cut(self) -> None:
        """Drop every open connection (each side sees it closed mid-answer)."""
        with self._lock:
            for side in self._open:
                with contextlib.suppress(OSError):
                    side.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def close(self) -> None:
        self.cut()
        self._server.close()


def _position(event: StreamEvent) -> tuple[int, ...]:
    parts = [int(part) for part in event.id.split(".")]
    return tuple(parts + [0] * (4 - len(parts)))


def test_a_stream_cut_mid_answer_resumes_with_nothing_lost_or_repeated(
    platform: RunningPlatform, client: Client, fake: FakeOpenAI
) -> None:
    pause = threading.Event()
    STREAM_OPENED.clear()
    fake.pauses[3] = pause  # the answer stops after its third word until the connection was cut
    proxy = _CuttableProxy(platform.ports["orchestrator"])
    try:
        accepted = client.invoke("streamer", "count", stream=True, wait=False)
        events: list[StreamEvent] = []
        with Client(f"http://127.0.0.1:{proxy.port}", api_key=KEY) as through_proxy:
            for event in through_proxy.stream(accepted.execution_id):
                events.append(event)
                STREAM_OPENED.set()  # the first event: the stream listens to the worker now
                if event.event == "text" and not pause.is_set():
                    proxy.cut()
                    pause.set()
    finally:
        fake.pauses.clear()
        pause.set()
        STREAM_OPENED.set()
        proxy.close()

    text = "".join(str(event.data["text"]) for event in events if event.event == "text")
    finished = [event for event in events if event.event == "finished"]
    positions = [_position(event) for event in events]
    assert proxy.connections >= 2, "the stream was resumed on a new connection"
    assert len(finished) == 1
    assert events[-1] is finished[0]
    assert finished[0].execution is not None
    assert finished[0].execution.output == STREAMED
    assert text == STREAMED, "every piece of text once, in order"
    assert positions == sorted(set(positions)), "ids strictly increase: none twice"


def test_a_call_retried_across_restarts_of_the_node_runs_once(tmp_path: Path) -> None:
    with _vendor() as vendor:
        first = _start(tmp_path, vendor)
        second = third = None
        try:
            with (
                Client(first.url("orchestrator"), api_key=KEY, retry_seconds=120) as client,
                ThreadPoolExecutor(1) as pool,
            ):
                # Killed while the invocation is in flight: its retries reach the restarted node.
                invoked = pool.submit(client.invoke, "slow", "survive this", timeout=120)
                _until(lambda: [r for r in vendor.requests if r["model"] == "slow"], bool)
                first.process.send_signal(signal.SIGKILL)
                first.process.wait(10)
                second = restart_platform(first)
                survived = invoked.result(timeout=120)
                # Called while the node is down: sent again until it is back.
                second.process.send_signal(signal.SIGKILL)
                second.process.wait(10)
                published = pool.submit(client.publish, "client.order.placed", {"prompt": "while down"})
                third = restart_platform(second)
                event = published.result(timeout=120)
                slow_runs = list(client.list_executions(agent="slow"))
                echo_runs = _until(
                    lambda: [e for e in client.list_executions(agent="echo") if e.input.get("prompt") == "while down"],
                    lambda runs: bool(runs) and runs[0].status.is_terminal,
                )
        finally:
            for running in (third, second, first):
                if running is not None:
                    running.stop()

    assert survived.status is ExecutionStatus.SUCCEEDED
    assert [run.execution_id for run in slow_runs] == [survived.execution_id], "one execution for one call"
    assert survived.attempts == 2, "the attempt the kill cut short, then the resumed one"
    assert len(echo_runs) == 1
    assert echo_runs[0].trace_id == event.trace_id


async def test_the_async_client_does_the_same(platform: RunningPlatform) -> None:
    async with AsyncClient(platform.url("orchestrator"), api_key=KEY) as client:
        ended = await client.invoke("echo", "async hello")
        accepted = await client.invoke("slow", "async slow", wait=False)
        events = [event async for event in client.stream(ended.execution_id)]
        detail = await client.get_execution(ended.execution_id)
        listed = [item.execution_id async for item in client.list_executions(agent="echo", page_size=2)]
        cancelled = await client.cancel(accepted.execution_id)
        waited = await client.wait(accepted.execution_id, timeout=30)
        published = await client.publish("client.order.placed", {"prompt": "async order"})
        waiting = await client.invoke("gated", "async time", timeout=60)
        approved = await client.approve(waiting.execution_id)
        after = await client.wait(waiting.execution_id, timeout=60)
        agents = await client.agents()
        with pytest.raises(NotFoundError) as unknown:
            await client.invoke("no-such-agent", "x")

    assert (ended.status, ended.output) == (ExecutionStatus.SUCCEEDED, "async hello")
    assert [event.event for event in events][-1] == "finished"
    assert events[-1].execution is not None
    assert events[-1].execution.output == "async hello"
    assert detail.execution_id == ended.execution_id
    assert ended.execution_id in listed
    assert cancelled.execution_id == accepted.execution_id
    assert waited.status is ExecutionStatus.CANCELLED
    assert published.topic == "client.order.placed"
    assert waiting.status is ExecutionStatus.WAITING_APPROVAL
    assert approved.status is ExecutionStatus.QUEUED
    assert after.status is ExecutionStatus.SUCCEEDED
    assert "echo" in {agent.name for agent in agents}
    assert unknown.value.code == "agent_not_found"


async def test_the_async_client_answers_approvals_and_plans(platform: RunningPlatform) -> None:
    async with AsyncClient(platform.url("orchestrator"), api_key=KEY) as client:
        accepted = await client.invoke("gated", "async deny", wait=False)
        waiting = await client.wait(accepted.execution_id, timeout=60)
        denied = await client.deny(accepted.execution_id, reason="async no")
        after = await client.wait(accepted.execution_id, timeout=60)
        with pytest.raises(ConflictError):
            await client.tool_outcome(accepted.execution_id, happened=True, result="it ran")
        page = await client.list_executions_page(agent="gated", limit=1)
        gated = await client.agent("gated")
        run_id = (await client.invoke("team", "async post", wait=False)).execution_id
        deadline = time.monotonic() + 30
        while (held := await client.get_plan_run(run_id)).status is not PlanRunStatus.AWAITING_APPROVAL:
            assert time.monotonic() < deadline, held
            await asyncio.sleep(0.1)
        approved = await client.approve_plan(run_id, plan=PLAN)
        while (asking := await client.get_plan_run(run_id)).status is not PlanRunStatus.NEEDS_CLARIFICATION:
            assert time.monotonic() < deadline, asking
            await asyncio.sleep(0.1)
        await client.answer_clarification(run_id, asking.clarifications[0].id, "US")
        while not (done := await client.get_plan_run(run_id)).status.is_terminal:
            assert time.monotonic() < deadline, done
            await asyncio.sleep(0.1)
        other_id = (await client.invoke("team", "async other", wait=False)).execution_id
        while (await client.get_plan_run(other_id)).status is not PlanRunStatus.AWAITING_APPROVAL:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        rejected = await client.reject_plan(other_id)
        runs = await client.list_plan_runs(agent="team", limit=100)

    assert waiting.status is ExecutionStatus.WAITING_APPROVAL, "a wait ends where a human is needed"
    assert denied.status is ExecutionStatus.QUEUED
    assert after.status is ExecutionStatus.SUCCEEDED
    assert "async no" in (after.output or "")
    assert len(page.items) == 1
    assert page.items[0].agent == "gated"
    assert gated.offered_tools == ["current_time"]
    assert approved.status is not PlanRunStatus.AWAITING_APPROVAL
    assert done.status is PlanRunStatus.SUCCEEDED
    assert done.steps[0].output == "written for US"
    assert rejected.status is PlanRunStatus.REJECTED
    assert {run_id, other_id} <= {run.id for run in runs}
