"""`cp .env.example .env` then `agentrunner up`, with no key anywhere: the shipped agents
load, each runs or waits only for a key it names in one line (none needs a tool server
this machine does not run), and the echo demo answers the seed's curl."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.e2e.platform import RunningPlatform, start_platform

pytestmark = pytest.mark.e2e

# What a shipped agent may wait for, as the agents list says it in one line.
KEY_REASONS = {
    "openai": "OPENAI_API_KEY not set",
    "anthropic": "ANTHROPIC_API_KEY not set",
    "bedrock": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY not set",
}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    workdir = tmp_path_factory.mktemp("fresh")
    shutil.copy(REPO / ".env.example", workdir / ".env")
    shutil.copytree(REPO / "config" / "agents", workdir / "agents")
    running = start_platform(workdir, {})
    yield running
    assert running.stop() == 0, running.log_path.read_text()


def test_every_shipped_agent_runs_or_waits_only_for_a_key_it_names_in_one_line(platform: RunningPlatform) -> None:
    agents = {a["name"]: a for a in httpx.get(f"{platform.url('orchestrator')}/agents").json()}
    shipped = {path.stem for path in (REPO / "config" / "agents").glob("*.yml")}
    waiting = {name: a for name, a in agents.items() if a["status"] != "available"}

    assert set(agents) == shipped
    assert {name for name, a in agents.items() if a["status"] == "available"} >= {"echo-assistant", "echo-chat"}
    # Nothing degraded (no tool server missing): what does not run lacks only its key.
    assert {a["status"] for a in waiting.values()} <= {"unavailable"}
    for name, agent in waiting.items():
        provider = agent["llm"]["provider"]
        assert len(agent["reasons"]) == 1, (name, agent["reasons"])
        assert agent["short_reason"] == KEY_REASONS[provider], name
        assert KEY_REASONS[provider].split()[0] in agent["reasons"][0]
    assert {a["llm"]["provider"] for a in waiting.values()} >= {"openai", "anthropic"}
    assert all(a["short_reason"] is None and a["reasons"] == [] for n, a in agents.items() if n not in waiting)


def test_no_agent_of_a_fresh_start_calls_a_tool_server(platform: RunningPlatform) -> None:
    log = platform.log_path.read_text()

    assert "MCP server unreachable" not in log
    assert "agent degraded" not in log


def test_the_seed_quick_start_curl_answers_with_the_echo_agent(platform: RunningPlatform) -> None:
    started = time.perf_counter()
    response = httpx.post(
        f"{platform.url('orchestrator')}/agents/echo-assistant/invoke",
        json={"task_data": {"prompt": "What is the capital of France?"}},
        headers={"Content-Type": "application/json"},
        timeout=30,
    )

    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    assert response.json()["output"] == "What is the capital of France?"
    assert time.perf_counter() - started < 5


def test_the_database_lives_under_data(platform: RunningPlatform) -> None:
    data_dir = Path(platform.env["DATA_DIR"])

    assert (data_dir / "agentrunner.db").is_file()
