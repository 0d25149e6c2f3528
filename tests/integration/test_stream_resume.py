"""Streams that survive (issue 22): every event of `GET /executions/{id}/events` has an id; a
client that reconnects with `Last-Event-ID` gets what it missed, from the journal, and
nothing twice, whether it dropped the connection itself or the worker (here the whole
embedded process) was killed mid-answer. The OpenAI wire fake streams the answer word by
word and stops at given words until told to go on, so each disconnect falls where the test
says; the stream is read over real HTTP (uvicorn), as a browser's EventSource would."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from agentrunner.adapters.state.urls import run_schema_command
from agentrunner.runtime.execution_stream import StreamPosition
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import BUSES, node_on
from tests.integration.processes import RoleProcesses, role_processes
from tests.integration.test_durable_agents import CountingTools, embedded_process, embedded_ready
from tests.ports import free_port

WORDS = [f"w{n}" for n in range(1, 25)]
REPLY = " ".join(WORDS)
AGENT = (
    "name: talker\nagent_type: t\nexecution_mode: autonomous\n"
    "llm_config: {provider: openai, model: gpt-4o, max_attempts: 1}\n"
)


def _through(words: int) -> int:
    """Characters of the answer once its first `words` pieces have been streamed."""
    return len("".join(f"{word} " for word in WORDS[:words]))


@dataclass(frozen=True)
class Sse:
    """One server-sent event as the client read it."""

    event: str
    id: str
    data: dict[str, Any]


async def _read(
    http: httpx.AsyncClient,
    url: str,
    *,
    until: Callable[[Sse], bool],
    last: str | None = None,
    after: str | None = None,
    opened: Callable[[], None] | None = None,
) -> list[Sse]:
    """The events of one connection to `url` (with `Last-Event-ID: last`, or `?after=`),
    read until one satisfies `until` (or `finished`); then the connection is dropped.
    `opened` runs once the first event (the status: the stream is bound) is read."""
    headers = {"Last-Event-ID": last} if last else {}
    params = {"after": after} if after else {}
    events: list[Sse] = []
    async with http.stream("GET", url, headers=headers, params=params) as response:
        assert response.status_code == 200, await response.aread()
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "event" not in fields:
                continue
            event = Sse(fields["event"], fields.get("id", ""), json.loads(fields.get("data") or "{}"))
            fields = {}
            events.append(event)
            if opened is not None and len(events) == 1:
                opened()
            if until(event) or event.event == "finished":
                break
    return events


@asynccontextmanager
async def _served(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` served by uvicorn on a loopback port (streams flow as they come)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 10
    while not server.started:
        assert not task.done(), "uvicorn stopped"
        assert asyncio.get_running_loop().time() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def _ended(http: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        record: dict[str, Any] = (await http.get(f"/executions/{execution_id}")).json()
        if record.get("status") not in ("queued", "running"):
            return record
        assert asyncio.get_running_loop().time() < deadline, record
        await asyncio.sleep(0.05)


def _text_to(position: int) -> Callable[[Sse], bool]:
    return lambda event: event.event == "text" and StreamPosition.parse(event.id).offset >= position


def _assert_once(connections: list[list[Sse]], output: str) -> None:
    """The text read over every connection is the output, each character once, and every
    event's id (a status's, a ping's included) is past the one before, across connections."""
    events = [event for connection in connections for event in connection]
    assert "".join(str(event.data["text"]) for event in events if event.event == "text") == output
    positions = [StreamPosition.parse(event.id) for event in events]
    assert all(a < b for a, b in itertools.pairwise(positions)), [event.id for event in events]


@pytest.mark.parametrize("bus", BUSES)
async def test_a_client_that_disconnects_twice_reads_the_answer_once(tmp_path: Path, bus: str) -> None:
    pauses = {5: threading.Event(), 12: threading.Event()}
    with FakeOpenAI(reply=REPLY, pauses=pauses) as fake:
        agents = {"talker.yml": AGENT}
        async with (
            node_on(bus, tmp_path, agents, openai_api_key=fake.api_key, openai_base_url=fake.base_url) as node,
            _served(node.apps()["orchestrator"]) as http,
        ):
            invoke = {"task_data": {"prompt": "go"}, "stream": True, "wait": 0}
            execution_id = (await http.post("/agents/talker/invoke", json=invoke)).json()["execution_id"]
            url = f"/executions/{execution_id}/events"
            # From the start (nothing missed however late it connects), to word 5, where the model waits.
            first = await _read(http, url, after="0.0.0", until=_text_to(_through(5)))
            # Back at once; the model goes on once the stream is open, and stops at word 12.
            second = await _read(http, url, last=first[-1].id, until=_text_to(_through(12)), opened=pauses[5].set)
            # Away while the model ends its answer: the rest is in the journal.
            pauses[12].set()
            await _ended(http, execution_id)
            third = await _read(http, url, last=second[-1].id, until=lambda _: False)

    assert third[-1].event == "finished"
    output = third[-1].data["output"]
    assert output == REPLY
    _assert_once([first, second, third], output)
    texts = [[str(e.data["text"]) for e in connection if e.event == "text"] for connection in (first, second, third)]
    assert "".join(texts[0]) == REPLY[: _through(5)]
    assert "".join(texts[1]) == REPLY[_through(5) : _through(12)]
    assert texts[2] == [REPLY[_through(12) :]]  # the step's text as recorded, from where the client was
    assert [e.id for e in third if e.event == "text"] == [f"1.1.{len(REPLY)}"]


def _asks_then_answers(body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    """The model: asks for step 1, then answers REPLY."""
    if not any(message["role"] == "tool" for message in body["messages"]):
        return "", ("kit__step", {"n": 1})
    return REPLY, None


async def test_a_worker_killed_mid_answer_leaves_the_client_with_the_answer_once(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    pause = threading.Event()
    with CountingTools() as tools, FakeOpenAI(script=_asks_then_answers, pauses={5: pause}) as fake:
        agent = AGENT + f"tools:\n  - {{name: kit, type: mcp, url: '{tools.url}', timeout_seconds: 60}}\n"
        (tmp_path / "agents" / "talker.yml").write_text(agent)
        port = free_port()
        process = embedded_process(tmp_path, fake, port)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                await embedded_ready(http, process, tmp_path)
                invoke = {"task_data": {"prompt": "go"}, "stream": True, "wait": 0}
                execution_id = (await http.post("/agents/talker/invoke", json=invoke)).json()["execution_id"]
                url = f"/executions/{execution_id}/events"
                # The tool call (step 2), then the answer (step 3) to word 5, where the model waits.
                before = await _read(http, url, after="0.0.0", until=_text_to(_through(5)))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        pause.set()  # the held answer goes to a worker that is gone
        calls_before = len(fake.requests)

        async with (
            node_on("memory", tmp_path, {}, openai_api_key=fake.api_key, openai_base_url=fake.base_url) as node,
            _served(node.apps()["orchestrator"]) as http,
        ):
            after = await _read(http, url, last=before[-1].id, until=lambda _: False)

    assert after[-1].event == "finished"
    output = after[-1].data["output"]
    assert output == REPLY
    _assert_once([before, after], output)
    # The tool call was seen once: the resumed run replayed it (not called, not sent again).
    assert [e.id for e in before + after if e.event == "tool_call"] == ["1.2.0"]
    assert dict(tools.calls) == {1: 1}
    # The answer cut short was asked again (its step had no outcome); the first one was not.
    assert (calls_before, len(fake.requests)) == (2, 3)


async def test_a_client_resuming_after_any_event_gets_what_followed_it_and_after_the_end_nothing(
    tmp_path: Path,
) -> None:
    with CountingTools() as tools, FakeOpenAI(script=_asks_then_answers) as fake:
        agent = AGENT + f"tools:\n  - {{name: kit, type: mcp, url: '{tools.url}'}}\n"
        async with (
            node_on(
                "memory", tmp_path, {"talker.yml": agent}, openai_api_key=fake.api_key, openai_base_url=fake.base_url
            ) as node,
            _served(node.apps()["orchestrator"]) as http,
        ):
            done = (await http.post("/agents/talker/invoke", json={"task_data": {"prompt": "go"}})).json()
            url = f"/executions/{done['execution_id']}/events"
            whole = await _read(http, url, after="0.0.0", until=lambda _: False)
            resumed = [await _read(http, url, last=event.id, until=lambda _: False) for event in whole[:-1]]
            after_the_end = await http.get(url, headers={"Last-Event-ID": whole[-1].id})
            after_the_end_query = await http.get(url, params={"after": whole[-1].id})

    assert [event.event for event in whole] == ["status", "tool_call", "text", "finished"]
    assert [event.id for event in whole] == ["0.0.0.1", "1.2.0", f"1.3.{len(REPLY)}", "1.4.0"]
    for index, connection in enumerate(resumed):
        followed = whole[index + 1 :]
        # The current status, then what followed the event it resumed after: each once.
        assert connection[0].event == "status"
        assert [(e.event, e.id, e.data) for e in connection[1:]] == [(e.event, e.id, e.data) for e in followed]
        _assert_once([whole[: index + 1], connection], REPLY)
    # After `finished`, nothing more: a 204, on which an EventSource stops reconnecting.
    assert (after_the_end.status_code, after_the_end.text) == (204, "")
    assert after_the_end_query.status_code == 204


@dataclass
class Deployment:
    """An orchestrator and a worker as processes on PostgreSQL and RabbitMQ, the model the
    OpenAI fake, whose answer waits at word 5 until `pause` is set."""

    roles: RoleProcesses
    url: str
    worker: subprocess.Popen[bytes]
    fake: FakeOpenAI
    pause: threading.Event


@pytest.fixture
def deployment(tmp_path: Path, postgres_url: str) -> Iterator[Deployment]:
    # A sync fixture: the schema command and the processes' cleanup run loops of their own.
    run_schema_command(postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "talker.yml").write_text(AGENT)
    pause = threading.Event()
    port = free_port()
    with FakeOpenAI(reply=REPLY, pauses={5: pause}) as fake:
        env = {"ORCHESTRATOR_PORT": str(port), "OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url}
        with role_processes(tmp_path, postgres_url, **env) as roles:
            roles.serve("orchestrator", log="o.log")
            url = f"http://127.0.0.1:{port}"
            [worker] = roles.serve_workers(1, ready=(url,))
            yield Deployment(roles, url, worker, fake, pause)
            pause.set()


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_a_client_connected_while_its_worker_is_killed_reads_the_answer_once(deployment: Deployment) -> None:
    async with httpx.AsyncClient(base_url=deployment.url, timeout=90) as http:
        invoke = {"task_data": {"prompt": "go"}, "stream": True, "wait": 0}
        execution_id = (await http.post("/agents/talker/invoke", json=invoke)).json()["execution_id"]
        url = f"/executions/{execution_id}/events"
        reading = asyncio.create_task(_read(http, url, after="0.0.0", until=lambda _: False))
        deadline = asyncio.get_running_loop().time() + 60
        while deployment.fake.streamed < 5:  # the answer waits at word 5
            assert asyncio.get_running_loop().time() < deadline, "the answer never streamed"
            await asyncio.sleep(0.05)
        deployment.worker.send_signal(signal.SIGKILL)
        assert deployment.worker.wait(10) == -signal.SIGKILL
        deployment.pause.set()
        # RabbitMQ hands the invocation to the next worker, which asks the model again (the
        # answer had no recorded outcome) and streams it again from its start.
        await asyncio.to_thread(deployment.roles.serve_workers, 1)
        events = await asyncio.wait_for(reading, 90)

    assert events[-1].event == "finished"
    assert events[-1].data["output"] == REPLY
    _assert_once([events], REPLY)
    assert len(deployment.fake.requests) == 2
    # Words 1-5 went out twice (the first answer, then the second from its start): the client read them once.
    assert deployment.fake.streamed >= len(WORDS) + 5


ALICE_KEY = "key-alice-0123456789abcdef0123456789"
MALLORY_KEY = "key-mallory-0123456789abcdef01234567"


async def test_a_stream_is_its_tenants_and_takes_only_ids_of_its_own_shape(tmp_path: Path) -> None:
    agent = "name: talker\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: scripted, model: s}\n"
    async with node_on(
        "memory",
        tmp_path,
        {"talker.yml": agent},
        script=lambda _: "hello",
        enable_api_auth=True,
        api_keys=f"alice:{ALICE_KEY},mallory:{MALLORY_KEY}",
    ) as node:
        app = node.apps()["orchestrator"]

        def client(key: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app)
            return httpx.AsyncClient(transport=transport, base_url="http://o", timeout=30, headers={"X-API-Key": key})

        async with client(ALICE_KEY) as alice, client(MALLORY_KEY) as mallory:
            done = (await alice.post("/agents/talker/invoke", json={"task_data": {"prompt": "go"}})).json()
            url = f"/executions/{done['execution_id']}/events"
            stolen = await mallory.get(url, headers={"Last-Event-ID": "0.0.0"})
            stolen_after = await mallory.get(url, params={"after": "0.0.0"})
            own = await alice.get(url, headers={"Last-Event-ID": "0.0.0"})
            # Past the end (the id of `finished`, or any beyond): 204 to its tenant, 404 to another,
            # which learns nothing, not even that the execution has ended.
            ended_for_mallory = await mallory.get(url, headers={"Last-Event-ID": "999.0.0.5"})
            ended_for_alice = await alice.get(url, headers={"Last-Event-ID": "999.0.0.5"})
            refused = [
                await alice.get(url, headers={"Last-Event-ID": bad})
                for bad in ("abc", "1.2", "-1.0.0", "1.1.1; drop", "1.0.0.0.0", "1.0.0.", "1" * 10_000 + ".0.0")
            ]
            refused.append(await alice.get(url, params={"after": "9" * 40 + ".1.1"}))
            refused.append(await alice.get(url, params={"after": "1.1.1." + "9" * 10}))

    assert stolen.status_code == stolen_after.status_code == ended_for_mallory.status_code == 404
    assert "hello" not in stolen.text + stolen_after.text
    assert own.status_code == 200
    assert "hello" in own.text
    assert ended_for_alice.status_code == 204
    assert [r.status_code for r in refused] == [422] * len(refused)
    assert {r.json()["error"]["code"] for r in refused} == {"validation_error"}
