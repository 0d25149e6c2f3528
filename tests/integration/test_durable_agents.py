"""Durable agents (issue 22): an agent loop of four tool calls in sequence against a real MCP
server that counts its calls, interrupted after tool call 2 and run again, replays what the
journal recorded (no model call, no tool call for it) and goes on from there; the retry of a
failed attempt starts fresh unless `retry_config.resume`; the steps are shown to their
tenant only."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.server.fastmcp import FastMCP

from agentrunner.adapters.providers.offline import ScriptedProvider
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.adapters.state.urls import run_schema_command
from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.domain.llm import LLMRequest, ToolDefinition
from agentrunner.node import Node
from agentrunner.ports.tools import Repeatable, ToolContext
from agentrunner.runtime.agent_run import run_agent
from agentrunner.runtime.journal import RunJournal
from agentrunner.runtime.tool_gates import ToolGate
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import node_on
from tests.integration.processes import RoleProcesses, role_processes
from tests.ports import free_port
from tests.threaded_server import ThreadedServer

TOOLS = 4
FINAL = "done: step 1, step 2, step 3, step 4"


class CountingTools:
    """A real MCP server (FastMCP over streamable HTTP on a loopback port, in a thread) with
    one tool, `step(n)`, that counts its calls by `n`; the first call of step `hold` waits
    until `release()` (or 60 s)."""

    def __init__(self, hold: int | None = None) -> None:
        self.calls: Counter[int] = Counter()
        self.hold = hold
        self._released = threading.Event()
        self.port = free_port()
        self._served = ThreadedServer("MCP test server", self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def release(self) -> None:
        self._released.set()

    def _build(self) -> FastMCP:
        server = FastMCP("durable-test-tools")

        @server.tool()
        async def step(n: int) -> str:
            """Do step n."""
            self.calls[n] += 1
            if n == self.hold and self.calls[n] == 1:
                deadline = time.monotonic() + 60
                while not self._released.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
            return f"step {n}"

        return server

    def __enter__(self) -> CountingTools:
        self._served.start(self._build().streamable_http_app(), lifespan="on")
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
        self._served.stop()


def _agent(
    url: str,
    *,
    provider: str = "openai",
    model: str = "gpt-4o",
    retry: str = "{max_retries: 0}",
    mode: str = "autonomous",
) -> str:
    return (
        f"name: journaled\nagent_type: t\nexecution_mode: {mode}\n"
        f"llm_config: {{provider: {provider}, model: {model}, max_attempts: 1}}\n"
        f"retry_config: {retry}\n"
        # `step` is declared safe to repeat: a call under way at a kill is simply run again
        # (a call that is not waits for a human: tests/integration/test_tool_gates.py).
        f"tools:\n  - {{name: kit, type: mcp, url: '{url}', timeout_seconds: 60, idempotent: true}}\n"
    )


def _vendor(body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    """The model: asks for step 1, then 2, 3, 4 (one call per answer), then says what it got."""
    results = [str(m["content"]) for m in body["messages"] if m["role"] == "tool"]
    if len(results) < TOOLS:
        return "", ("kit__step", {"n": len(results) + 1})
    return "done: " + ", ".join(results), None


@pytest.fixture
def tools() -> Iterator[CountingTools]:
    with CountingTools(hold=3) as server:
        yield server


async def _wait_for(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


async def _finished(http: httpx.AsyncClient, execution_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        record: dict[str, Any] = (await http.get(f"/executions/{execution_id}")).json()
        if record.get("status") not in ("queued", "running"):
            return record
        assert asyncio.get_running_loop().time() < deadline, record
        await asyncio.sleep(0.05)


def _orchestrator(node: Node, **headers: str) -> httpx.AsyncClient:
    app = node.apps()["orchestrator"]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o", timeout=30, headers=headers)


def embedded_process(tmp_path: Path, fake: FakeOpenAI, port: int) -> subprocess.Popen[bytes]:
    """Every role in one process, embedded (SQLite in `tmp_path`, the in-memory bus), as
    `agentrunner up` runs them."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env |= {
        "AGENTS_DIR": str(tmp_path / "agents"),
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": "",
        "RABBITMQ_URL": "",
        "ORCHESTRATOR_PORT": str(port),
        **{f"{role}_PORT": str(free_port()) for role in ("STATE", "CONFIG", "SCHEDULER", "SLACK")},
        "OPENAI_API_KEY": fake.api_key,
        "OPENAI_BASE_URL": fake.base_url,
        "LOG_LEVEL": "WARNING",
    }
    with (tmp_path / "first-run.log").open("wb") as log:
        command = [sys.executable, "-m", "agentrunner", "up"]
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


async def embedded_ready(http: httpx.AsyncClient, process: subprocess.Popen[bytes], tmp_path: Path) -> None:
    """Until the process of `embedded_process` answers /health/ready (its log said if it died)."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        assert process.poll() is None, (tmp_path / "first-run.log").read_text()
        try:
            if (await http.get("/health/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert asyncio.get_running_loop().time() < deadline, "the first run never got ready"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("mode", ["autonomous", "continuous"])
async def test_a_run_killed_after_two_tool_calls_resumes_from_the_journal_without_calling_them_again(
    tmp_path: Path, tools: CountingTools, mode: str
) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "journaled.yml").write_text(_agent(tools.url, mode=mode))
    task = {"task_data": {"prompt": "go"}, "wait": 0} | ({"session_id": "s-1"} if mode == "continuous" else {})
    port = free_port()
    with FakeOpenAI(script=_vendor) as fake:
        process = embedded_process(tmp_path, fake, port)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                await embedded_ready(http, process, tmp_path)
                answer = await http.post("/agents/journaled/invoke", json=task)
                execution_id = answer.json()["execution_id"]
                # Step 3 was called: tools 1 and 2 ended and were recorded before it.
                await _wait_for(lambda: tools.calls[3] == 1, "tool call 3 never came")
                during = (await http.get(f"/executions/{execution_id}")).json()
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        model_calls_before = len(fake.requests)
        tools.release()  # the held call ends in a server whose client is gone

        async with (
            node_on(
                "memory",
                tmp_path,
                {"journaled.yml": _agent(tools.url, mode=mode)},
                openai_api_key=fake.api_key,
                openai_base_url=fake.base_url,
            ) as node,
            _orchestrator(node) as http,
        ):
            execution = await _finished(http, execution_id)
            history = (await node.store.sessions.load_state("journaled", "s-1")).history if mode == "continuous" else []

    assert [(s["kind"], s["status"]) for s in during["steps"]][-2:] == [("model", "succeeded"), ("tool", "started")]
    _assert_resumed(execution, tools, model_calls=(model_calls_before, len(fake.requests)))
    if mode == "continuous":  # the session holds the turn once
        assert [(m["role"], m["content"]) for m in history] == [("user", "go"), ("assistant", FINAL)]


def _assert_resumed(execution: dict[str, Any], tools: CountingTools, *, model_calls: tuple[int, int]) -> None:
    """The run killed during tool call 3 ended as one run would have, calling nothing twice
    but call 3: `model_calls` is (before the kill, in all)."""
    assert execution["status"] == "succeeded", execution
    assert execution["output"] == FINAL
    # Tools 1, 2 and the model's first three answers came from the journal; call 3 had no
    # recorded outcome (the kill came during it): run again.
    assert dict(tools.calls) == {1: 1, 2: 1, 3: 2, 4: 1}
    assert model_calls == (3, TOOLS + 1)
    steps = execution["steps"]
    assert [(s["kind"], s["name"], s["replayed"]) for s in steps] == [
        ("model", "gpt-4o", True),
        ("tool", "kit__step", True),
        ("model", "gpt-4o", True),
        ("tool", "kit__step", True),
        ("model", "gpt-4o", True),
        ("tool", "kit__step", False),
        ("model", "gpt-4o", False),
        ("tool", "kit__step", False),
        ("model", "gpt-4o", False),
    ]
    assert {s["status"] for s in steps} == {"succeeded"}
    assert {s["generation"] for s in steps} == {1}
    assert [s["seq"] for s in steps] == list(range(1, 10))
    # Usage and cost carried: the execution counts every answer once, replayed ones included.
    models = [s for s in steps if s["kind"] == "model"]
    assert execution["usage"]["input_tokens"] == sum(s["usage"]["input_tokens"] for s in models)
    assert execution["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in models))
    assert execution["saved_cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in models[:3]))
    assert execution["saved_cost_usd"] > 0
    assert [c["result"] for c in execution["tool_calls"]] == ["step 1", "step 2", "step 3", "step 4"]


@dataclass
class Deployment:
    """An orchestrator and a worker as processes on PostgreSQL and RabbitMQ."""

    roles: RoleProcesses
    orchestrator: str
    worker: subprocess.Popen[bytes]
    fake: FakeOpenAI


@pytest.fixture
def deployment(tmp_path: Path, postgres_url: str, tools: CountingTools) -> Iterator[Deployment]:
    run_schema_command(postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "journaled.yml").write_text(_agent(tools.url))
    port = free_port()
    orchestrator = f"http://127.0.0.1:{port}"
    with FakeOpenAI(script=_vendor) as fake:
        env = {"ORCHESTRATOR_PORT": str(port), "OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url}
        with role_processes(tmp_path, postgres_url, **env) as roles:
            roles.serve("orchestrator", log="o.log")
            [worker] = roles.serve_workers(1, ready=(orchestrator,))
            yield Deployment(roles, orchestrator, worker, fake)


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_a_worker_killed_9_after_two_tool_calls_resumes_on_another_from_the_journal(
    deployment: Deployment, tools: CountingTools
) -> None:
    async with httpx.AsyncClient(base_url=deployment.orchestrator, timeout=10) as http:
        answer = await http.post("/agents/journaled/invoke", json={"task_data": {"prompt": "go"}, "wait": 0})
        execution_id = answer.json()["execution_id"]
        await _wait_for(lambda: tools.calls[3] == 1, "tool call 3 never came")
        deployment.worker.send_signal(signal.SIGKILL)
        assert deployment.worker.wait(10) == -signal.SIGKILL
        model_calls_before = len(deployment.fake.requests)
        tools.release()
        # RabbitMQ hands the unacknowledged invocation to the next worker.
        await asyncio.to_thread(deployment.roles.serve_workers, 1)
        execution = await _finished(http, execution_id, timeout=90)

    _assert_resumed(execution, tools, model_calls=(model_calls_before, len(deployment.fake.requests)))


class FailingOnce:
    """The scripted model of the retry tests: the loop of `_vendor`, whose third answer
    (after tool call 2) fails once with `failure` (a task-level retry)."""

    def __init__(self, failure: Exception) -> None:
        self.calls = 0
        self.failed = False
        self.failure = failure

    def __call__(self, request: LLMRequest) -> Any:
        self.calls += 1
        results = [m.content for m in request.messages if m.role == "tool"]
        if len(results) == 2 and not self.failed:
            self.failed = True
            raise self.failure
        return _scripted_loop(request)


@pytest.mark.parametrize(
    ("resume", "failure"),
    [
        (False, RuntimeError("the model's host fell over")),
        (True, RuntimeError("the model's host fell over")),
        # A backing service away is the platform's failure, not the agent's: its retry goes
        # on from the journal as a re-run after a crash does, whatever `resume` says.
        (False, DependencyUnavailableError("the limiter's store is not answering")),
    ],
    ids=["fresh", "resume", "outage"],
)
async def test_the_retry_of_a_failed_attempt_starts_fresh_unless_resume_or_an_outage(
    tmp_path: Path, resume: bool, failure: Exception
) -> None:
    model = FailingOnce(failure)
    retry = f"{{max_retries: 1, retry_delay_seconds: 0, resume: {str(resume).lower()}}}"
    with CountingTools() as tools:
        agent = _agent(tools.url, provider="scripted", model="s", retry=retry)
        async with (
            node_on("memory", tmp_path, {"journaled.yml": agent}, script=model) as node,
            _orchestrator(node) as http,
        ):
            answer = await http.post("/agents/journaled/invoke", json={"task_data": {"prompt": "go"}, "wait": 30})
            execution = (await http.get(f"/executions/{answer.json()['execution_id']}")).json()

    assert execution["status"] == "succeeded", execution
    assert execution["output"] == FINAL
    assert execution["attempts"] == 2
    steps = [(s["generation"], s["seq"], s["kind"], s["status"], s["replayed"]) for s in execution["steps"]]
    first = [
        (1, 1, "model", "succeeded"),
        (1, 2, "tool", "succeeded"),
        (1, 3, "model", "succeeded"),
        (1, 4, "tool", "succeeded"),
    ]
    if resume or isinstance(failure, DependencyUnavailableError):
        # On in generation 1: the first four steps replayed, the failed answer asked again.
        assert dict(tools.calls) == {1: 1, 2: 1, 3: 1, 4: 1}
        assert model.calls == 3 + 3
        assert steps[:4] == [(*s, True) for s in first]
        assert [s[:4] for s in steps[4:]] == [
            (1, 5, "model", "succeeded"),
            (1, 6, "tool", "succeeded"),
            (1, 7, "model", "succeeded"),
            (1, 8, "tool", "succeeded"),
            (1, 9, "model", "succeeded"),
        ]
    else:  # generation 2 from the first message: every call made again
        assert dict(tools.calls) == {1: 2, 2: 2, 3: 1, 4: 1}
        assert model.calls == 3 + 5
        assert steps[:5] == [*((*s, False) for s in first), (1, 5, "model", "failed", False)]
        assert [s[0] for s in steps[5:]] == [2] * 9
        assert not any(s[4] for s in steps)
        assert execution["saved_cost_usd"] is None


ALICE_KEY = "key-alice-0123456789abcdef0123456789"
MALLORY_KEY = "key-mallory-0123456789abcdef01234567"


async def test_another_tenant_cannot_read_the_steps(tmp_path: Path) -> None:
    with CountingTools() as tools:
        agent = _agent(tools.url, provider="scripted", model="s")
        async with (
            node_on(
                "memory",
                tmp_path,
                {"journaled.yml": agent},
                script=_scripted_loop,
                enable_api_auth=True,
                api_keys=f"alice:{ALICE_KEY},mallory:{MALLORY_KEY}",
            ) as node,
            _orchestrator(node, **{"X-API-Key": ALICE_KEY}) as alice,
            _orchestrator(node, **{"X-API-Key": MALLORY_KEY}) as mallory,
        ):
            answer = await alice.post("/agents/journaled/invoke", json={"task_data": {"prompt": "go"}, "wait": 30})
            execution_id = answer.json()["execution_id"]
            own = await alice.get(f"/executions/{execution_id}")
            stolen = await mallory.get(f"/executions/{execution_id}")
            missing = await mallory.get("/executions/no-such-execution")

    assert own.status_code == 200
    assert len(own.json()["steps"]) == 2 * TOOLS + 1
    assert stolen.status_code == 404
    assert "steps" not in stolen.text
    assert "step 1" not in stolen.text
    assert stolen.json()["error"]["code"] == missing.json()["error"]["code"]


def _scripted_loop(request: LLMRequest) -> Any:
    """`_vendor` for the scripted provider."""
    results = [m.content for m in request.messages if m.role == "tool"]
    if len(results) < TOOLS:
        n = len(results) + 1
        return {"tool_calls": [{"id": f"c{n}", "name": "kit__step", "arguments": {"n": n}}]}
    return "done: " + ", ".join(results)


# An agent of the scripted model, for the tests that run its loop with a journal directly.
SCRIPTED = AgentConfig.model_validate(
    {
        "name": "a",
        "agent_type": "t",
        "execution_mode": "autonomous",
        "llm_config": {"provider": "scripted", "model": "s"},
    }
)


class Recorder:
    """An in-process tool that counts its calls."""

    definition = ToolDefinition(name="lookup", parameters={"type": "object", "properties": {"q": {"type": "string"}}})
    timeout_seconds = 5.0
    repeatable = Repeatable.ALWAYS

    def repeatable_call(self, arguments: dict[str, Any]) -> bool:
        return True

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> str:
        self.calls.append(str(arguments["q"]))
        return f"found {arguments['q']}"


def _asking(*queries: str) -> Callable[[LLMRequest], Any]:
    """A model that asks `lookup` for each of `queries` in turn, then answers."""

    def answer(request: LLMRequest) -> Any:
        done = sum(m.role == "tool" for m in request.messages)
        if done < len(queries):
            return {"tool_calls": [{"id": f"c{done}", "name": "lookup", "arguments": {"q": queries[done]}}]}
        return "done"

    return answer


async def test_a_journal_that_differs_from_the_run_is_not_replayed(store: SQLStateStore) -> None:
    config = SCRIPTED
    first, second = Recorder(), Recorder()
    await run_agent(
        config,
        ScriptedProvider(_asking("x", "y")),
        {"prompt": "go"},
        tools=[first],
        journal=RunJournal(store, "e1", model="s"),
    )
    recorded = await store.steps("e1")

    # The same execution run again after its agent moved to another model: the recorded
    # answers are another model's, so none is replayed, and no tool call after them either.
    provider = ScriptedProvider(_asking("x", "z"))
    journal = RunJournal(store, "e1", recorded=recorded, model="s2")
    answer = await run_agent(config, provider, {"prompt": "go"}, tools=[second], journal=journal)

    assert answer.text == "done"
    assert first.calls == ["x", "y"]
    assert second.calls == ["x", "z"]
    assert len(provider.requests) == 3
    steps = await store.steps("e1")
    assert [(s.name, s.replayed) for s in steps] == [("s2", False), ("lookup", False)] * 2 + [("s2", False)]
    assert steps[3].outcome["arguments"] == {"q": "z"}


async def test_a_replayed_run_asks_nothing_streams_nothing_and_answers_the_same(store: SQLStateStore) -> None:
    config = SCRIPTED
    first, second = Recorder(), Recorder()
    streamed: tuple[list[str], list[str]] = ([], [])

    async def sink(into: list[str], piece: str) -> None:
        into.append(piece)

    original = await run_agent(
        config,
        ScriptedProvider(_asking("x", "y")),
        {"prompt": "go"},
        tools=[first],
        journal=RunJournal(store, "e1", model="s"),
        on_text=lambda piece: sink(streamed[0], piece),
    )

    provider = ScriptedProvider(_asking("p", "q"))  # would answer otherwise: it is not asked
    journal = RunJournal(store, "e1", recorded=await store.steps("e1"), model="s")
    again = await run_agent(
        config,
        provider,
        {"prompt": "go"},
        tools=[second],
        journal=journal,
        on_text=lambda piece: sink(streamed[1], piece),
    )

    assert (again.text, again.usage) == (original.text, original.usage)
    assert "".join(streamed[0]) == "done"
    assert streamed[1] == []  # the reader saw the answer once, in the first run
    assert provider.requests == []
    assert second.calls == []
    assert all(step.replayed for step in await store.steps("e1"))


async def test_a_journal_write_that_fails_keeps_what_happened_and_forgets_what_did_not(database_url: str) -> None:
    """The store goes away during a run (here: closed under it): the call whose outcome could
    not be written happened, and a retry that goes on from the journal's steps replays it."""
    config = SCRIPTED
    store = SQLStateStore(database_url)
    await store.start()

    class ClosingTheStore(Recorder):
        async def call(self, arguments: dict[str, Any], context: ToolContext) -> str:
            answer = await super().call(arguments, context)
            if len(self.calls) == 1:
                await store.close()  # the outcome of this call cannot be written
            return answer

    first = ClosingTheStore()
    journal = RunJournal(store, "e1", model="s")
    with pytest.raises(DependencyUnavailableError):
        await run_agent(config, ScriptedProvider(_asking("x", "y")), {"prompt": "go"}, tools=[first], journal=journal)
    assert first.calls == ["x"]
    kept = journal.steps()
    assert [(s.kind.value, s.status.value) for s in kept] == [("model", "succeeded"), ("tool", "succeeded")]

    store = SQLStateStore(database_url)
    await store.start()
    try:
        second = Recorder()
        retry = RunJournal(store, "e1", recorded=kept, model="s")
        provider = ScriptedProvider(_asking("x", "y"))
        answer = await run_agent(config, provider, {"prompt": "go"}, tools=[second], journal=retry)
        assert answer.text == "done"
        assert second.calls == ["y"]  # x happened once, in the first run
        steps = await store.steps("e1")
        assert [(s.name, s.status.value, s.replayed) for s in steps] == [
            ("s", "succeeded", True),
            ("lookup", "succeeded", True),
            ("s", "succeeded", False),
            ("lookup", "succeeded", False),
            ("s", "succeeded", False),
        ]
    finally:
        await store.close()


async def test_a_tool_start_that_could_not_be_written_is_not_taken_for_a_call_under_way(database_url: str) -> None:
    """The store goes away just before a side-effecting call's start is written: the call is
    not made, so the retry makes it (without the fix, the retry found the unwritten start,
    took the call for one under way with an unknown outcome, and stopped for a human)."""
    config = SCRIPTED
    store = SQLStateStore(database_url)
    await store.start()
    asking = _asking("x", "y")

    async def closing_before_y(request: LLMRequest) -> Any:
        answer = asking(request)
        if len([m for m in request.messages if m.role == "tool"]) == 1:
            await store.close()  # the start of call y cannot be written
        return answer

    class Acting(Recorder):  # a call that may act twice: never repeated blindly
        repeatable = Repeatable.NEVER

        def repeatable_call(self, arguments: dict[str, Any]) -> bool:
            return False

    first = Acting()
    journal = RunJournal(store, "e1", model="s", gate=ToolGate(config, "e1"))
    with pytest.raises(DependencyUnavailableError):
        await run_agent(config, ScriptedProvider(closing_before_y), {"prompt": "go"}, tools=[first], journal=journal)
    assert first.calls == ["x"]
    kept = journal.steps()
    assert [(s.kind.value, s.status.value) for s in kept] == [("model", "succeeded"), ("tool", "succeeded")] * 1 + [
        ("model", "succeeded")
    ]

    store = SQLStateStore(database_url)
    await store.start()
    try:
        second = Acting()
        retry = RunJournal(store, "e1", recorded=kept, model="s", gate=ToolGate(config, "e1"))
        answer = await run_agent(
            config, ScriptedProvider(_asking("x", "y")), {"prompt": "go"}, tools=[second], journal=retry
        )
        assert answer.text == "done"
        assert second.calls == ["y"]
    finally:
        await store.close()
