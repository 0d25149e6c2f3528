"""Bounded input (issue 19, rule 4), against a running `agentrunner up` with two tenants:
an alias bomb refused at once while the other roles keep answering, task sizes, empty
invocations, history bytes, list previews, schedule pages, event-stream caps and lifetime."""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.domain.agent_document import AgentFileError, parse_agent_document
from tests.e2e.platform import RunningPlatform, start_platform
from tests.fakes.openai_server import FakeOpenAI
from tests.security.conftest import TEAM_A_KEY, TEAM_B_KEY, TENANTS_ENV

A = {"X-API-Key": TEAM_A_KEY}
B = {"X-API-Key": TEAM_B_KEY}
MAX_HISTORY_BYTES = 4096
MAX_STREAMS = 2
STREAM_SECONDS = 5.0

AGENTS = {
    # Its model answers only when the test lets it: an execution that stays running.
    "hanging.yml": (
        "name: hanging\nagent_type: t\nexecution_mode: autonomous\ntimeout_seconds: 120\n"
        "llm_config: {provider: openai, model: hang}\n"
    ),
    "echo.yml": "name: echo\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n",
    "chat.yml": (
        "name: chat\nagent_type: t\nexecution_mode: continuous\nllm_config: {provider: echo, model: echo}\n"
        "continuous_config: {max_conversation_history: 50}\n"
    ),
}


def alias_bomb(levels: int = 9) -> str:
    """The issue's document: each level a list of nine aliases to the level below, so a
    few hundred bytes stand for 9**levels strings once anything walks the tree."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{','.join([f'*a{level - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def release() -> threading.Event:
    return threading.Event()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, release: threading.Event) -> Iterator[RunningPlatform]:
    workdir = tmp_path_factory.mktemp("bounds")
    (workdir / "agents").mkdir()
    for name, text in AGENTS.items():
        (workdir / "agents" / name).write_text(text)

    def answer(body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
        release.wait(90)
        return "released", None

    with FakeOpenAI(api_key="sk-bounds", script=answer) as fake:
        env = {
            **TENANTS_ENV,
            "OPENAI_API_KEY": fake.api_key,
            "OPENAI_BASE_URL": fake.base_url,
            "MAX_HISTORY_BYTES": str(MAX_HISTORY_BYTES),
            "MAX_STREAMS_PER_TENANT": str(MAX_STREAMS),
            "MAX_STREAM_SECONDS": str(STREAM_SECONDS),
        }
        running = start_platform(workdir, env)
        try:
            yield running
        finally:
            release.set()
            assert running.stop() == 0, running.log_path.read_text()[-3000:]


@pytest.fixture
def api(platform: RunningPlatform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.url("orchestrator"), headers=A, timeout=30) as client:
        yield client


# --- YAML ----------------------------------------------------------------------------------


def test_the_alias_bomb_is_refused_naming_its_line_before_anything_is_built() -> None:
    began = time.perf_counter()
    with pytest.raises(AgentFileError) as refused:
        parse_agent_document(alias_bomb(12), "bomb.yml")  # 9**12 strings, were it built
    took = time.perf_counter() - began

    assert took < 0.1
    assert "bomb.yml:1: YAML anchor &a0: agent files allow no anchors or aliases" in str(refused.value)


def test_the_alias_bomb_is_a_4xx_within_100_ms_while_another_role_keeps_answering(
    platform: RunningPlatform,
) -> None:
    """Measured where each figure means something on a loaded machine: the refusal path by
    the server's own request log (a client's clock adds the OS's scheduling of two
    processes), the other role's liveness by a client probing it while the bombs land (a
    blocked event loop shows there, and only there)."""
    bomb = alias_bomb()
    assert len(bomb.encode()) < 450  # the issue's 422-byte document, give or take
    pings: list[float] = []
    done = threading.Event()

    def probe_state_role() -> None:
        with httpx.Client(base_url=platform.url("state"), timeout=30) as state:
            state.get("/health/live")  # connected before the measure
            while not done.is_set():
                began = time.perf_counter()
                assert state.get("/health/live").status_code == 200
                pings.append(time.perf_counter() - began)
                done.wait(0.01)  # a probe every 10 ms, not a load of its own

    prober = threading.Thread(target=probe_state_role)
    answers = []
    with httpx.Client(base_url=platform.url("config"), headers=A, timeout=30) as config:
        config.get("/health/live")
        prober.start()
        try:
            deadline = time.monotonic() + 10
            while not pings:  # the prober is probing
                assert time.monotonic() < deadline
                time.sleep(0.01)
            for n in range(20):  # a bomb every 20 ms or so, while it probes
                headers = {"content-type": "application/yaml", "x-trace-id": f"bomb-{n}"}
                answers.append(config.post("/configs/validate", content=bomb, headers=headers))
                time.sleep(0.02)
        finally:
            done.set()
            prober.join(30)

    for response in answers:
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "config_invalid"
        assert "request body:1: YAML anchor &a0" in response.json()["error"]["message"]
    served = _request_durations_ms(platform, "bomb-", len(answers))
    assert len(served) == len(answers)
    assert max(served) < 100, served
    assert len(pings) > 10
    # Each probe crosses two processes on a machine that may be busy (58 ms seen in a loaded
    # CI run, one of 0.97 s with the suite spread over three processes beside other work):
    # the median shows the role answering at once, the worst that it never stalled; an
    # expanded bomb (9**10 strings) blocks a loop for far longer than 2 s.
    assert statistics.median(pings) < 0.05, sorted(pings)[-3:]
    assert max(pings) < 2.0, sorted(pings)[-3:]


def _request_durations_ms(platform: RunningPlatform, trace_prefix: str, expected: int) -> list[float]:
    """How long the server took over each request whose trace id starts with `trace_prefix`,
    from its request log lines (waiting for `expected` of them)."""
    deadline = time.monotonic() + 10
    while True:
        durations = [
            float(record["metadata"]["duration_ms"])
            for record in platform.log_records()
            if record.get("message") == "request" and str(record.get("trace_id", "")).startswith(trace_prefix)
        ]
        if len(durations) >= expected or time.monotonic() > deadline:
            return durations
        time.sleep(0.05)


def test_a_validate_body_over_256_kib_is_413_naming_the_limit(platform: RunningPlatform) -> None:
    body = "name: big\n" + "# padding\n" * 27_000

    response = httpx.post(f"{platform.url('config')}/configs/validate", content=body, headers=A, timeout=30)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert "262144 bytes" in response.json()["error"]["message"]


def test_an_agent_file_with_aliases_is_reported_broken_and_the_others_load(tmp_path: Path) -> None:
    from agentrunner.adapters.config.files import load_agent_directory  # noqa: PLC0415

    (tmp_path / "bomb.yml").write_text("name: bomb\n" + alias_bomb())
    (tmp_path / "echo.yml").write_text(AGENTS["echo.yml"])

    loaded = load_agent_directory(tmp_path)

    assert [document.config.name for document in loaded.documents] == ["echo"]
    assert [issue.line for issue in loaded.issues] == [2]
    assert "anchor &a0" in loaded.issues[0].message


# --- task_data -----------------------------------------------------------------------------


def test_task_data_over_max_task_bytes_is_413_naming_the_limit(api: httpx.Client, platform: RunningPlatform) -> None:
    huge = {"prompt": "x" * (256 * 1024)}
    before = api.get("/executions", params={"agent": "echo"}).json()["items"]

    invoked = api.post("/agents/echo/invoke", json={"task_data": huge, "wait": 0})
    published = api.post("/events", json={"topic": "orders.created", "payload": huge})
    scheduled = httpx.post(
        f"{platform.url('scheduler')}/schedules",
        json={"agent": "echo", "id": "huge", "interval_seconds": 60, "task_data": huge},
        headers=A,
        timeout=30,
    )

    for response in (invoked, published, scheduled):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "payload_too_large"
        assert "262144 bytes (MAX_TASK_BYTES)" in response.json()["error"]["message"]
    assert api.get("/executions", params={"agent": "echo"}).json()["items"] == before


def test_an_invocation_without_task_data_is_422_and_runs_nothing(api: httpx.Client) -> None:
    before = api.get("/executions", params={"agent": "chat"}).json()["items"]
    bodies: list[dict[str, object]] = [{}, {"wait": 0}, {"task_data": {}}]
    for body in bodies:
        response = api.post("/agents/chat/invoke", json=body)

        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"] == "validation_error"
        assert "task_data" in response.json()["error"]["message"]
    assert api.get("/executions", params={"agent": "chat"}).json()["items"] == before


# --- history -------------------------------------------------------------------------------


def test_a_conversation_keeps_its_newest_messages_within_max_history_bytes(
    api: httpx.Client, platform: RunningPlatform
) -> None:
    for turn in range(6):  # each exchange ~2 KiB: 12 KiB in all, far under 50 messages
        prompt = f"turn {turn} " + "y" * 1000
        answer = api.post("/agents/chat/invoke", json={"task_data": {"prompt": prompt}, "session_id": "s-bytes"})
        assert answer.json()["status"] == "succeeded", answer.text

    state = httpx.get(f"{platform.url('state')}/state/chat/s-bytes", headers=A, timeout=30).json()
    history = state["history"]
    stored = len(json.dumps(history, separators=(",", ":"), ensure_ascii=False).encode())

    assert stored <= MAX_HISTORY_BYTES
    assert history[-1]["content"].startswith("turn 5 ")  # the newest kept, the oldest dropped
    assert not any(message["content"].startswith("turn 0 ") for message in history)


def test_putting_a_history_over_max_history_bytes_is_413(platform: RunningPlatform) -> None:
    history = [{"role": "user", "content": "z" * 1000} for _ in range(5)]

    response = httpx.put(f"{platform.url('state')}/state/chat/s-put", json={"history": history}, headers=A, timeout=30)

    assert response.status_code == 413, response.text
    assert f"{MAX_HISTORY_BYTES} bytes (MAX_HISTORY_BYTES)" in response.json()["error"]["message"]


# --- lists ---------------------------------------------------------------------------------


def test_the_list_shows_a_truncated_preview_and_the_detail_the_whole_record(api: httpx.Client) -> None:
    prompt = "long " * 4000  # 20 kB
    finished = api.post("/agents/echo/invoke", json={"task_data": {"prompt": prompt, "n": 1}}).json()
    assert finished["status"] == "succeeded"

    listed = next(
        item
        for item in api.get("/executions", params={"agent": "echo"}).json()["items"]
        if item["execution_id"] == finished["execution_id"]
    )
    whole = api.get(f"/executions/{finished['execution_id']}").json()

    assert listed["truncated"] is True
    assert len(json.dumps(listed["input"]).encode()) <= 2048 + 64
    assert prompt.startswith(listed["input"]["prompt"])
    assert len(listed["output"].encode()) <= 2048
    assert whole["input"] == {"prompt": prompt, "n": 1}
    assert whole["output"] == finished["output"]
    assert len(whole["output"]) > 10_000
    assert "truncated" not in whole


def test_schedules_come_in_pages_and_the_whole_list_stays_a_list(platform: RunningPlatform) -> None:
    with httpx.Client(base_url=platform.url("scheduler"), headers=A, timeout=30) as scheduler:
        made = set()
        for n in range(5):
            body = {"agent": "echo", "id": f"page-{n}", "interval_seconds": 3600, "paused": True}
            body["task_data"] = {"prompt": "tick"}
            assert scheduler.post("/schedules", json=body).status_code == 201
            made.add(f"page-{n}")

        seen: list[str] = []
        params: dict[str, Any] = {"limit": 2}
        pages = 0
        while True:
            page = scheduler.get("/schedules", params=params)
            assert page.status_code == 200
            assert len(page.json()) <= 2
            seen.extend(view["schedule"]["id"] for view in page.json())
            pages += 1
            following = page.headers.get("x-next-cursor")
            if following is None:
                assert "link" not in page.headers
                break
            assert 'rel="next"' in page.headers["link"]
            params = {"limit": 2, "cursor": following}
        everything = scheduler.get("/schedules").json()

    assert pages == 3
    assert [s for s in seen if s in made] == sorted(made)
    assert len(seen) == len(set(seen))
    assert isinstance(everything, list)
    assert {view["schedule"]["id"] for view in everything} >= made


# --- event streams -------------------------------------------------------------------------


def _running(api: httpx.Client, key: dict[str, str] = A) -> str:
    accepted = api.post("/agents/hanging/invoke", json={"task_data": {"prompt": "wait"}, "wait": 0}, headers=key)
    assert accepted.status_code == 202, accepted.text
    return str(accepted.json()["execution_id"])


def _open(stack: contextlib.ExitStack, client: httpx.Client, path: str, key: dict[str, str]) -> httpx.Response:
    return stack.enter_context(client.stream("GET", path, headers=key))


def test_event_streams_are_capped_per_tenant(api: httpx.Client) -> None:
    path = f"/executions/{_running(api)}/events"
    own_path = f"/executions/{_running(api, B)}/events"  # a tenant streams its own executions
    with contextlib.ExitStack() as held:
        streams = [_open(held, api, path, A) for _ in range(MAX_STREAMS)]
        assert [stream.status_code for stream in streams] == [200] * MAX_STREAMS

        with api.stream("GET", path) as refused:
            refused.read()
        # A2A's streams draw on the same slots: no second allowance through another door.
        a2a = api.post(
            "/a2a/hanging",
            headers={"A2A-Version": "1.0"},
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "SendStreamingMessage",
                "params": {"message": {"role": "ROLE_USER", "messageId": "m-1", "parts": [{"text": "wait"}]}},
            },
        )
        with api.stream("GET", own_path, headers=B) as other_tenant:
            other_status = other_tenant.status_code

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_streams"
    assert "MAX_STREAMS_PER_TENANT" in refused.json()["error"]["message"]
    assert "MAX_STREAMS_PER_TENANT" in a2a.text, a2a.text[:500]
    assert other_status == 200
    deadline = time.monotonic() + 10  # closed streams give their slots back
    while True:
        with api.stream("GET", path) as again:
            if again.status_code == 200:
                break
        assert time.monotonic() < deadline, "slots not given back after the streams closed"
        time.sleep(0.1)


def test_an_event_stream_ends_after_max_stream_seconds(api: httpx.Client) -> None:
    execution_id = _running(api)
    began = time.monotonic()
    events = []
    with api.stream("GET", f"/executions/{execution_id}/events", timeout=STREAM_SECONDS + 20) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
            assert time.monotonic() - began < STREAM_SECONDS + 15, "the stream outlived MAX_STREAM_SECONDS"
    took = time.monotonic() - began

    assert STREAM_SECONDS - 0.5 <= took < STREAM_SECONDS + 15
    assert events[0] == "status"
    assert "finished" not in events
    assert api.get(f"/executions/{execution_id}").json()["status"] in {"queued", "running"}
