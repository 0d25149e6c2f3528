"""Tools as a user sets them up: `agentrunner up` with an agent file naming an MCP server
(FastMCP on a loopback port, its token from the environment) and a tool from a package
installed with pip; the OpenAI SDK talks to its loopback fake, which asks for the tools in
the vendor's format. The answer uses both results, the calls are on the execution, the
agent lists what its model is offered, and the token never reaches the logs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import REPO
from tests.e2e.platform import RunningPlatform, start_platform
from tests.fakes.openai_server import FakeOpenAI
from tests.mcp_server import McpHttpServer

pytestmark = pytest.mark.e2e

TOKEN = "e2e-mcp-token-5d1c"


def agent_file(url: str) -> str:
    return f"""
name: tool-user
agent_type: assistant
execution_mode: autonomous
llm_config: {{provider: openai, model: gpt-4o}}
tools:
  - name: kit
    type: mcp
    url: "{url}"
    headers: {{Authorization: "Bearer ${{KIT_TOKEN}}"}}
  - name: word_count
  - name: current_time
"""


def vendor(body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    """The model: asks who it is to the MCP server, then counts words, then answers."""
    results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
    if not results:
        return "", ("kit__whoami", {})
    if len(results) == 1:
        return "", ("word_count", {"text": "four words right here"})
    return f"I am {results[0]} and counted {results[1]}.", None


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningPlatform, FakeOpenAI]]:
    site = tmp_path_factory.mktemp("site")
    package = REPO / "tests" / "fixtures" / "tool_package"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(package)]
    subprocess.run(pip, check=True, capture_output=True, timeout=110)
    workdir = tmp_path_factory.mktemp("platform")
    with McpHttpServer() as mcp, FakeOpenAI(script=vendor) as fake:
        (workdir / "agents").mkdir()
        (workdir / "agents" / "tool-user.yml").write_text(agent_file(mcp.url))
        running = start_platform(
            workdir,
            {
                "OPENAI_API_KEY": fake.api_key,
                "OPENAI_BASE_URL": fake.base_url,
                "KIT_TOKEN": TOKEN,
                "PYTHONPATH": f"{site}:{REPO}",
            },
        )
        yield running, fake
        assert running.stop() == 0, running.log_path.read_text()


@pytest.mark.timeout(180)
def test_an_agent_answers_with_an_mcp_tool_and_an_installed_tool(platform: tuple[RunningPlatform, FakeOpenAI]) -> None:
    running, fake = platform
    orchestrator = running.url("orchestrator")

    agent = httpx.get(f"{orchestrator}/agents/tool-user", timeout=10).json()
    answer = httpx.post(
        f"{orchestrator}/agents/tool-user/invoke", json={"task_data": {"prompt": "who are you?"}}, timeout=60
    )

    assert agent["status"] == "available", agent["reasons"]
    assert {"kit__add", "kit__whoami", "word_count", "current_time"} <= set(agent["offered_tools"])
    assert answer.status_code == 200, answer.text
    execution = answer.json()
    assert execution["output"] == f"I am Bearer {TOKEN} and counted 4 words (for tool-user)."
    assert [(c["name"], c["iteration"], c["error"]) for c in execution["tool_calls"]] == [
        ("kit__whoami", 1, None),
        ("word_count", 2, None),
    ]
    assert len(fake.requests) == 3
    assert TOKEN not in running.log_path.read_text()
    assert agent["tools"][0]["headers"] == {"Authorization": "********"}
    assert TOKEN not in str(agent)
