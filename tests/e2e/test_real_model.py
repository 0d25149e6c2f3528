"""Every provider path answered by a real model: SmolLM2-135M-Instruct served by llama.cpp
(tests/real_model), offline, behind a recording proxy, with `agentrunner up` started as a
user would. The model is small and often silly: the tests assert shapes and flows (what
reached the server, what it answered, what agentrunner recorded), never its wording.

One model server, one proxy and one platform serve the whole module (the suite's budget
is tight). Greedy sampling (temperature 0) makes the answers repeatable."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.platform import RunningPlatform, start_platform
from tests.real_model.proxy import Exchange, RecordingProxy, recording_proxy
from tests.real_model.server import INSTALL_HINT, ModelServer, missing_wheels, model_server

# The deadlines are for a loaded machine: a 2-core box shared with other work ran the
# planner's two 700-token prompts in 90 s, against a few seconds idle.
pytestmark = [pytest.mark.e2e, pytest.mark.real_model, pytest.mark.timeout(300)]

if missing_wheels():
    # `make install` installs them; only a venv made before this suite existed lacks them.
    # CI must run these tests: there a missing wheel fails.
    if os.environ.get("CI"):
        raise RuntimeError(f"the real-model tests need {missing_wheels()}: {INSTALL_HINT}")
    pytest.skip(f"needs {missing_wheels()}: {INSTALL_HINT}", allow_module_level=True)

MODEL = "smollm2"
STOPPED_BEFORE = 400

AGENTS = {
    "openai-bot.yml": f"""
name: openai-bot
agent_type: qa
execution_mode: autonomous
description: Answers a question in one sentence.
llm_config: {{provider: openai, model: {MODEL}, temperature: 0, max_tokens: 24, max_attempts: 1}}
system_prompt: Answer in one short sentence.
retry_config: {{max_retries: 0}}
""",
    "anthropic-bot.yml": f"""
name: anthropic-bot
agent_type: qa
execution_mode: autonomous
llm_config: {{provider: anthropic, model: {MODEL}, temperature: 0, max_tokens: 24, max_attempts: 1}}
system_prompt: Answer in one short sentence.
retry_config: {{max_retries: 0}}
""",
    "chat-bot.yml": f"""
name: chat-bot
agent_type: support
execution_mode: continuous
llm_config: {{provider: openai, model: {MODEL}, temperature: 0, max_tokens: 16, max_attempts: 1}}
system_prompt: You are a friendly assistant.
""",
    "ticker.yml": f"""
name: ticker
agent_type: monitor
execution_mode: scheduled
llm_config: {{provider: openai, model: {MODEL}, temperature: 0, max_tokens: 16, max_attempts: 1}}
schedule_config:
  type: interval
  interval_seconds: 2
  task_data: {{prompt: "Say hello."}}
""",
    "team.yml": f"""
name: team
agent_type: coordinator
execution_mode: collaborative
llm_config: {{provider: openai, model: {MODEL}, temperature: 0, max_tokens: 64, max_attempts: 1}}
collaborative_config: {{preferred_collaborators: [openai-bot], max_plan_steps: 2}}
retry_config: {{max_retries: 0}}
""",
    "clock-bot.yml": f"""
name: clock-bot
agent_type: assistant
execution_mode: autonomous
llm_config: {{provider: openai, model: {MODEL}, temperature: 0, max_tokens: 32, max_attempts: 1}}
tools: [{{name: current_time}}]
max_tool_iterations: 2
retry_config: {{max_retries: 0}}
""",
    "talker.yml": f"""
name: talker
agent_type: writer
execution_mode: autonomous
llm_config: {{provider: openai, model: {MODEL}, temperature: 0, max_tokens: 2000, max_attempts: 1}}
retry_config: {{max_retries: 0}}
""",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    with model_server(tmp_path_factory.mktemp("model")) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(model: ModelServer) -> Iterator[RecordingProxy]:
    with recording_proxy(model.url) as running:
        yield running


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, proxy: RecordingProxy) -> Iterator[RunningPlatform]:
    workdir = tmp_path_factory.mktemp("platform")
    (workdir / "agents").mkdir()
    for name, text in AGENTS.items():
        (workdir / "agents" / name).write_text(text)
    running = start_platform(
        workdir,
        {
            # The server checks no key; the SDKs want one.
            "OPENAI_API_KEY": "sk-local",
            "OPENAI_BASE_URL": f"{proxy.url}/v1",
            "ANTHROPIC_API_KEY": "sk-ant-local",
            "ANTHROPIC_BASE_URL": proxy.url,
        },
    )
    yield running
    assert running.stop() == 0, running.log_path.read_text()


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return value


def _invoke(platform: RunningPlatform, agent: str, prompt: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{platform.url('orchestrator')}/agents/{agent}/invoke",
        json={"task_data": {"prompt": prompt}, "wait": 0, **body},
        timeout=30,
    )
    assert response.status_code in (200, 202), response.text
    record: dict[str, Any] = response.json()
    return record


def _record(platform: RunningPlatform, execution_id: str) -> dict[str, Any]:
    response = httpx.get(f"{platform.url('orchestrator')}/executions/{execution_id}", timeout=30)
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def _ended(platform: RunningPlatform, execution_id: str, timeout: float = 90) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        record = _record(platform, execution_id)
        return None if record["status"] in ("queued", "running") else record

    result: dict[str, Any] = _wait(ended, timeout, f"execution {execution_id} ended")
    return result


def _exchanges(proxy: RecordingProxy, marker: str) -> list[Exchange]:
    """The requests whose messages carry `marker` (each test's prompt is its own)."""
    return [e for e in proxy.exchanges if marker in json.dumps(e.request)]


def test_a_scheduled_tick_runs_the_agent_on_the_model(platform: RunningPlatform, proxy: RecordingProxy) -> None:
    def ticked() -> dict[str, Any] | None:
        listed = httpx.get(f"{platform.url('orchestrator')}/executions", params={"agent": "ticker"}, timeout=30)
        items = [i for i in listed.json()["items"] if i["status"] not in ("queued", "running")]
        return items[0] if items else None

    tick = _wait(ticked, 90, "the schedule's first tick ended")
    # No more ticks: the other tests share the server's one slot.
    paused = httpx.post(f"{platform.url('scheduler')}/schedules/{tick['schedule_id']}/pause", timeout=30)

    assert tick["status"] == "succeeded", tick
    assert paused.status_code == 200, paused.text
    assert tick["output"].strip()
    assert _exchanges(proxy, "Say hello."), "the tick's task reached the server"


def test_autonomous_agents_answer_through_openai_and_anthropic(
    platform: RunningPlatform, proxy: RecordingProxy
) -> None:
    openai = _invoke(platform, "openai-bot", "What is the capital of France? (openai)")
    anthropic = _invoke(platform, "anthropic-bot", "What is the capital of Italy? (anthropic)")
    answers = {
        "openai": _ended(platform, openai["execution_id"]),
        "anthropic": _ended(platform, anthropic["execution_id"]),
    }

    for wire, record in answers.items():
        assert record["status"] == "succeeded", record
        assert record["output"].strip(), record
        assert (record["provider"], record["model"]) == (wire, MODEL)
        assert record["usage"]["output_tokens"] > 0
    (to_openai,) = _exchanges(proxy, "(openai)")
    (to_anthropic,) = _exchanges(proxy, "(anthropic)")
    assert to_openai.path == "/v1/chat/completions"
    assert to_anthropic.path == "/v1/messages"
    # What the server answered is what was recorded, word for word.
    assert to_openai.response is not None
    assert to_openai.response["choices"][0]["message"]["content"] == answers["openai"]["output"]
    assert to_anthropic.response is not None
    assert to_anthropic.response["content"][0]["text"] == answers["anthropic"]["output"]


def test_usage_recorded_is_what_the_server_reported(platform: RunningPlatform, proxy: RecordingProxy) -> None:
    plain = _ended(platform, _invoke(platform, "openai-bot", "Name a colour. (usage plain)")["execution_id"])
    streamed = _ended(
        platform, _invoke(platform, "openai-bot", "Name a fruit. (usage streamed)", stream=True)["execution_id"]
    )
    anthropic = _ended(platform, _invoke(platform, "anthropic-bot", "Name a city. (usage anthropic)")["execution_id"])

    for record, marker in ((plain, "(usage plain)"), (streamed, "(usage streamed)"), (anthropic, "(usage anthropic)")):
        (exchange,) = _exchanges(proxy, marker)
        assert exchange.complete
        reported = exchange.reported_usage()
        assert reported[0] > 0
        assert reported[1] > 0
        assert (record["usage"]["input_tokens"], record["usage"]["output_tokens"]) == reported, marker
    assert _exchanges(proxy, "(usage streamed)")[0].request["stream"] is True


def test_a_streamed_answer_assembles_exactly_the_final_output(platform: RunningPlatform, proxy: RecordingProxy) -> None:
    accepted = _invoke(platform, "openai-bot", "Describe the sea in one sentence. (sse)", stream=True)

    texts: list[str] = []
    finished: dict[str, Any] = {}
    url = f"{platform.url('orchestrator')}/executions/{accepted['execution_id']}/events"
    with httpx.stream("GET", url, timeout=90) as response:
        assert response.status_code == 200
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "text":
                texts.append(json.loads(line.removeprefix("data: "))["text"])
            elif line.startswith("data: ") and event == "finished":
                finished = json.loads(line.removeprefix("data: "))
                break

    record = _record(platform, accepted["execution_id"])
    (exchange,) = _exchanges(proxy, "(sse)")
    served = "".join(
        choice["delta"].get("content") or "" for chunk in exchange.stream_events() for choice in chunk["choices"]
    )
    assert record["status"] == "succeeded"
    assert len(texts) > 1, "the answer came in pieces"
    assert "".join(texts) == finished["output"] == record["output"] == served


def test_a_continuous_sessions_earlier_turns_reach_the_model(platform: RunningPlatform, proxy: RecordingProxy) -> None:
    first = _ended(
        platform, _invoke(platform, "chat-bot", "My name is Ada. (turn one)", session_id="real-s1")["execution_id"]
    )
    second = _ended(
        platform, _invoke(platform, "chat-bot", "What is my name? (turn two)", session_id="real-s1")["execution_id"]
    )
    other = _ended(
        platform, _invoke(platform, "chat-bot", "Hello there. (other session)", session_id="real-s2")["execution_id"]
    )

    assert [r["status"] for r in (first, second, other)] == ["succeeded"] * 3
    (sent,) = [e for e in _exchanges(proxy, "(turn two)") if "(turn one)" in json.dumps(e.request)]
    turns = [(m["role"], m["content"]) for m in sent.request["messages"] if m["role"] != "system"]
    assert turns == [
        ("user", "My name is Ada. (turn one)"),
        ("assistant", first["output"]),
        ("user", "What is my name? (turn two)"),
    ]
    (apart,) = _exchanges(proxy, "(other session)")
    assert "(turn one)" not in json.dumps(apart.request), "sessions are apart"


def test_a_small_planner_gets_a_valid_plan_or_fails_clearly_after_one_retry(
    platform: RunningPlatform, proxy: RecordingProxy
) -> None:
    accepted = _invoke(platform, "team", "Find the capital of Spain and then of Portugal. (plan)")
    record = _ended(platform, accepted["execution_id"], timeout=240)

    plans = [
        e
        for e in _exchanges(proxy, "(plan)")
        if any(t["function"]["name"] == "submit_plan" for t in e.request.get("tools", []))
    ]
    if record["status"] == "succeeded":
        assert len(plans) in (1, 2)
        assert record["output"].strip()
    else:
        assert record["status"] == "failed", record
        assert record["error"]["code"] == "plan_invalid", record["error"]
        assert "invalid twice" in record["error"]["message"]
        assert len(plans) == 2, "one retry, then the failure"


def test_a_real_servers_tool_call_is_parsed_and_run(platform: RunningPlatform, proxy: RecordingProxy) -> None:
    record = _ended(platform, _invoke(platform, "clock-bot", "What time is it? (tool)")["execution_id"])

    first, *rest = _exchanges(proxy, "(tool)")
    assert first.response is not None
    message = first.response["choices"][0]["message"]
    assert message.get("tool_calls"), message
    (served,) = message["tool_calls"]
    assert served["function"]["name"] == "current_time"
    assert record["status"] in ("succeeded", "failed"), record
    call = record["tool_calls"][0]
    assert (call["call_id"], call["name"]) == (served["id"], "current_time")
    assert call["arguments"] == json.loads(served["function"]["arguments"])
    assert call["result"], "the tool ran"
    # The tool's answer went back to the server as the answer to the server's own call id.
    assert rest, "the model was asked again with the tool's answer"
    answered = [m for m in rest[0].request["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in answered] == [served["id"]]


def test_cancelling_a_long_generation_stops_the_server_generating(
    platform: RunningPlatform, proxy: RecordingProxy, model: ModelServer
) -> None:
    _wait(lambda: not model.slot()["is_processing"], 120, "the server idle before the long answer")
    before = model.metrics()["llamacpp:tokens_predicted_total"]
    # Streamed: llama.cpp stops a streamed answer at its next write to the closed connection
    # (0.5-3 s here). A non-streamed one it stops only if it notices the client gone, which
    # it did in 5.6 s in one probe and not within 20 s in the next: a server's matter, not ours.
    accepted = _invoke(
        platform, "talker", "Write a very long story about a dragon, in ten chapters. (long)", stream=True
    )
    _wait(lambda: model.slot()["is_processing"], 60, "the server generating the long answer")

    cancel = httpx.post(f"{platform.url('orchestrator')}/executions/{accepted['execution_id']}/cancel", timeout=30)
    assert cancel.status_code in (200, 202), cancel.text
    record = _ended(platform, accepted["execution_id"])
    _wait(lambda: not model.slot()["is_processing"], 30, "the server stopped generating")
    generated = model.metrics()["llamacpp:tokens_predicted_total"] - before

    assert record["status"] == "cancelled", record
    (exchange,) = _exchanges(proxy, "(long)")
    assert not exchange.complete, "the answer was never relayed in full"
    # Greedy, this story runs past 800 tokens; the server stopped long before.
    assert generated < STOPPED_BEFORE, f"the server went on for {generated} tokens"
