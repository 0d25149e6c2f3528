"""kill -9 of `agentrunner up` (embedded: SQLite, in-memory bus) and a restart: an execution
that was running finishes after the restart, and a conversation keeps its whole history."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from agentrunner.liveness import probe_tls
from tests.e2e.platform import RunningPlatform, start_platform
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.e2e

AGENTS = {
    "slow.yml": (
        "name: slow\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"
    ),
    "chat.yml": "name: chat\nagent_type: t\nexecution_mode: continuous\nllm_config: {provider: echo, model: echo}\n",
}


def _start(workdir: Path, fake: FakeOpenAI) -> RunningPlatform:
    return start_platform(workdir, {"OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url})


def _say(platform: RunningPlatform, text: str) -> dict[str, object]:
    response = httpx.post(
        f"{platform.url('orchestrator')}/agents/chat/invoke",
        json={"task_data": {"prompt": text}, "session_id": "s1"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_work_and_conversations_survive_kill_9(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    for name, text in AGENTS.items():
        (tmp_path / "agents" / name).write_text(text)
    with FakeOpenAI(api_key="sk-crash") as fake:
        fake.delay_seconds = 2.0
        first = _start(tmp_path, fake)
        try:
            _say(first, "hello")
            _say(first, "my order is late")
            accepted = httpx.post(
                f"{first.url('orchestrator')}/agents/slow/invoke", json={"task_data": {"prompt": "x"}, "wait": 0}
            ).json()
            deadline = time.monotonic() + 10
            while not fake.requests:  # the slow call is in flight
                assert time.monotonic() < deadline
                time.sleep(0.02)
            first.process.send_signal(signal.SIGKILL)
            assert first.process.wait(10) == -signal.SIGKILL
        finally:
            first.stop()

        fake.delay_seconds = 0.0
        second = _start(tmp_path, fake)
        try:
            deadline = time.monotonic() + 20
            status = ""
            while status != "succeeded" and time.monotonic() < deadline:
                url = f"{second.url('orchestrator')}/executions/{accepted['execution_id']}"
                execution = httpx.get(url, verify=probe_tls()).json()
                status = str(execution["status"])
                time.sleep(0.1)
            _say(second, "any news?")
            state = httpx.get(f"{second.url('state')}/state/chat/s1").json()
        finally:
            assert second.stop() == 0

    assert status == "succeeded"
    assert execution["attempts"] == 2, "the interrupted attempt, then the resumed one"
    assert [m["content"] for m in state["history"] if m["role"] == "user"] == [
        "hello",
        "my order is late",
        "any news?",
    ]
