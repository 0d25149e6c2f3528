"""`cp .env.example .env` then `agentrunner up`, with no key anywhere: the shipped agents
load, the echo demo answers the seed's curl, and agents that need a key say which."""

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


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    workdir = tmp_path_factory.mktemp("fresh")
    shutil.copy(REPO / ".env.example", workdir / ".env")
    shutil.copytree(REPO / "config" / "agents", workdir / "agents")
    running = start_platform(workdir, {})
    yield running
    assert running.stop() == 0, running.log_path.read_text()


def test_the_shipped_agents_load_and_say_why_they_cannot_run(platform: RunningPlatform) -> None:
    agents = {a["name"]: a for a in httpx.get(f"{platform.url('orchestrator')}/agents").json()}
    shipped = {path.stem for path in (REPO / "config" / "agents").glob("*.yml")}

    assert set(agents) == shipped
    assert len(agents) >= 20
    assert agents["echo-assistant"]["status"] == "available"
    unavailable = [a for a in agents.values() if a["status"] == "unavailable"]
    assert unavailable
    assert all(a["reasons"] for a in unavailable)
    openai_agents = [a for a in agents.values() if (a["llm"] or {}).get("provider") == "openai"]
    assert all("OPENAI_API_KEY" in " ".join(a["reasons"]) for a in openai_agents)


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
