"""A user's first session: start `agentrunner up`, invoke agents over HTTP and the CLI,
read the records back, through a loopback server that speaks OpenAI's wire format."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.domain.execution import Usage
from agentrunner.domain.pricing import cost_usd
from agentrunner.liveness import probe_tls
from tests.e2e.platform import RunningPlatform, start_platform
from tests.fakes.openai_server import FakeOpenAI
from tests.ports import free_port

pytestmark = pytest.mark.e2e

SECRET_KEY = "sk-e2e-secret-7f3a9c"

AGENTS = {
    "my-assistant.yml": """
name: my-assistant
agent_type: task_executor
execution_mode: autonomous
description: "A helpful AI assistant"
llm_config:
  provider: openai
  model: gpt-4o
  temperature: 0.7
  max_tokens: 2000
system_prompt: |
  You are a helpful AI assistant that answers questions accurately and concisely.
tags: [general, qa]
event_subscriptions: ["slack.command.ask", "task.submitted.general"]
retry_config:
  max_retries: 2
  retry_delay_seconds: 0
tools:
  - name: tickets
    type: mcp
    url: "http://127.0.0.1:9/mcp"
    api_key: "tool-secret-value"
""",
    "echo-assistant.yml": """
name: echo-assistant
agent_type: demo
execution_mode: autonomous
description: Echoes the prompt
llm_config: {provider: echo, model: echo}
""",
    "needs-anthropic.yml": """
name: needs-anthropic
agent_type: analyst
execution_mode: autonomous
llm_config: {provider: anthropic, model: claude-3-haiku-20240307}
""",
    "broken.yml": """
name: broken-agent
agent_type: analyst
execution_mode: sometimes
llm_config: {provider: openai, model: gpt-4o}
""",
}


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=SECRET_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[RunningPlatform]:
    workdir = tmp_path_factory.mktemp("platform")
    (workdir / "agents").mkdir()
    for name, text in AGENTS.items():
        (workdir / "agents" / name).write_text(text)
    running = start_platform(
        workdir,
        {"OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": fake_openai.base_url, "LLM_RETRY_BASE_SECONDS": "0.01"},
    )
    yield running
    assert running.stop() == 0, running.log_path.read_text()


@pytest.fixture(autouse=True)
def _fresh_fake(fake_openai: FakeOpenAI) -> None:
    fake_openai.failures.clear()
    fake_openai.requests.clear()


def invoke(platform: RunningPlatform, agent: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{platform.url('orchestrator')}/agents/{agent}/invoke", json=body, headers=headers, timeout=30)


def test_invoke_answers_through_the_openai_wire_and_records_the_execution(
    platform: RunningPlatform, fake_openai: FakeOpenAI
) -> None:
    response = invoke(
        platform,
        "my-assistant",
        {"task_data": {"prompt": "What is the capital of France?"}},
        **{"X-Trace-Id": "trace-e2e-1"},
    )

    assert response.status_code == 200, response.text
    record = response.json()
    assert record["status"] == "succeeded"
    assert record["output"] == fake_openai.reply
    assert record["agent"] == "my-assistant"
    assert record["attempts"] == 1
    assert record["trace_id"] == "trace-e2e-1"
    assert response.headers["x-trace-id"] == "trace-e2e-1"
    sent = fake_openai.requests[0]
    assert sent["model"] == "gpt-4o"
    assert sent["temperature"] == 0.7
    assert sent["max_tokens"] == 2000
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][1] == {"role": "user", "content": "What is the capital of France?"}
    expected_in = sum(len(m["content"].split()) for m in sent["messages"])
    expected_out = len(fake_openai.reply.split())
    assert record["usage"] == {"input_tokens": expected_in, "output_tokens": expected_out}
    assert record["cost_usd"] == pytest.approx(
        cost_usd("openai", "gpt-4o", Usage(input_tokens=expected_in, output_tokens=expected_out))
    )
    assert record["created_at"] <= record["started_at"] <= record["finished_at"]

    # GET adds the journal of the run (its steps, what replayed steps saved) to the record.
    again = httpx.get(f"{platform.url('orchestrator')}/executions/{record['execution_id']}").json()
    steps, saved = again.pop("steps"), again.pop("saved_cost_usd")
    assert again == record
    assert [(step["kind"], step["status"], step["replayed"]) for step in steps] == [("model", "succeeded", False)]
    assert saved is None
    audit = httpx.get(f"{platform.url('state')}/executions/{record['execution_id']}").json()
    assert audit.pop("steps") == steps
    assert audit.pop("saved_cost_usd") is None
    assert audit == record

    with sqlite3.connect(platform.workdir / "data" / "agentrunner.db") as db:
        row = db.execute(
            "SELECT status, output, input_tokens, output_tokens, trace_id FROM executions WHERE execution_id = ?",
            (record["execution_id"],),
        ).fetchone()
    assert row == ("succeeded", fake_openai.reply, expected_in, expected_out, "trace-e2e-1")

    finished = [
        r for r in platform.log_records() if r["message"] == "execution finished" and r["trace_id"] == "trace-e2e-1"
    ]
    assert finished, "the worker's log line carries the caller's trace id"
    assert set(finished[0]) == {"timestamp", "level", "service", "trace_id", "message", "metadata"}
    assert finished[0]["metadata"]["execution_id"] == record["execution_id"]


def test_the_server_freezes_its_start_up_heap(platform: RunningPlatform) -> None:
    """Full garbage collections walking the start-up objects stopped every request for
    ~100 ms (the p99 of bench/slack_ack.py); frozen once started, they are not walked."""
    frozen = [r for r in platform.log_records() if r["message"] == "start-up heap frozen"]

    assert len(frozen) == 1
    assert frozen[0]["metadata"]["objects"] > 50_000  # modules, apps, agents: most of the heap


def test_echo_agent_answers_without_any_key(platform: RunningPlatform) -> None:
    response = invoke(platform, "echo-assistant", {"task_data": {"prompt": "ping"}})

    assert response.status_code == 200
    assert response.json()["output"] == "ping"


def test_wait_zero_answers_202_then_the_execution_finishes(platform: RunningPlatform) -> None:
    response = invoke(platform, "my-assistant", {"task_data": {"prompt": "later"}, "wait": 0})

    assert response.status_code == 202
    accepted = response.json()
    assert set(accepted) == {"execution_id", "status", "trace_id"}
    deadline = time.monotonic() + 10
    status = accepted["status"]
    while status not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
        url = f"{platform.url('orchestrator')}/executions/{accepted['execution_id']}"
        status = httpx.get(url, verify=probe_tls()).json()["status"]
    assert status == "succeeded"


def test_provider_errors_are_retried_within_the_step_then_recorded(
    platform: RunningPlatform, fake_openai: FakeOpenAI
) -> None:
    fake_openai.failures.extend([429])
    recovered = invoke(platform, "my-assistant", {"task_data": {"prompt": "flaky"}}).json()
    calls_for_recovered = len(fake_openai.requests)
    # A vendor that answers 500 to every call: three calls for the step (llm_config.
    # max_attempts) and no more; the task's retries (max_retries 2) do not multiply them.
    fake_openai.failures.extend([500] * 20)
    try:
        failed = invoke(platform, "my-assistant", {"task_data": {"prompt": "down"}}).json()
    finally:
        fake_openai.failures.clear()

    assert (recovered["status"], recovered["attempts"], calls_for_recovered) == ("succeeded", 1, 2)
    assert (failed["status"], failed["attempts"]) == ("failed", 1)
    assert len(fake_openai.requests) - calls_for_recovered == 3
    assert failed["error"]["code"] == "llm_unavailable"
    assert failed["output"] is None


def test_unknown_agent_is_404_with_the_error_shape(platform: RunningPlatform) -> None:
    response = invoke(
        platform, "no-such-agent", {"task_data": {"prompt": "anyone there?"}}, **{"X-Trace-Id": "trace-404"}
    )

    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "agent_not_found", "message": response.json()["error"]["message"], "trace_id": "trace-404"}
    }
    assert "no-such-agent" in response.json()["error"]["message"]


def test_invalid_json_is_400_and_a_wrong_field_is_422(platform: RunningPlatform) -> None:
    url = f"{platform.url('orchestrator')}/agents/my-assistant/invoke"
    bad_json = httpx.post(url, content=b'{"task_data": ', headers={"content-type": "application/json"})
    bad_field = httpx.post(url, json={"task_data": "not an object"})

    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["code"] == "invalid_json"
    assert bad_field.status_code == 422
    assert "task_data" in bad_field.json()["error"]["message"]


def test_agents_list_shows_status_and_reasons(platform: RunningPlatform) -> None:
    agents = {a["name"]: a for a in httpx.get(f"{platform.url('orchestrator')}/agents").json()}

    # Its MCP server (port 9) does not answer: it runs, without that server's tools.
    assert agents["my-assistant"]["status"] == "degraded"
    assert "tool 'tickets': MCP server http://127.0.0.1:9/mcp unreachable" in agents["my-assistant"]["reasons"][0]
    assert agents["echo-assistant"]["status"] == "available"
    assert agents["my-assistant"]["llm"] == {"provider": "openai", "model": "gpt-4o"}
    assert agents["needs-anthropic"]["status"] == "unavailable"
    assert "ANTHROPIC_API_KEY" in agents["needs-anthropic"]["reasons"][0]
    assert agents["broken-agent"]["status"] == "unavailable"
    assert "execution_mode" in agents["broken-agent"]["reasons"][0]
    assert {name: agents[name]["short_reason"] for name in ("my-assistant", "needs-anthropic", "echo-assistant")} == {
        "my-assistant": "MCP server 'tickets' unreachable",
        "needs-anthropic": "ANTHROPIC_API_KEY not set",
        "echo-assistant": None,
    }
    assert agents["broken-agent"]["short_reason"].startswith("invalid file: execution_mode")
    assert all(len(a["short_reason"] or "") <= 80 for a in agents.values())
    detail = httpx.get(f"{platform.url('orchestrator')}/agents/my-assistant").json()
    assert detail["event_subscriptions"] == ["slack.command.ask", "task.submitted.general"]
    unavailable = invoke(platform, "needs-anthropic", {"task_data": {"prompt": "x"}})
    assert unavailable.status_code == 409
    assert unavailable.json()["error"]["code"] == "agent_unavailable"


def test_configs_are_served_with_secrets_masked(platform: RunningPlatform) -> None:
    config = httpx.get(f"{platform.url('config')}/configs/my-assistant").json()
    listed = httpx.get(f"{platform.url('config')}/configs").json()

    assert config["config"]["llm_config"]["model"] == "gpt-4o"
    assert config["config"]["tools"][0]["api_key"] == "********"
    assert "tool-secret-value" not in str(config)
    assert {c["name"] for c in listed} >= {"my-assistant", "echo-assistant", "broken-agent"}


def test_every_role_serves_health_and_docs(platform: RunningPlatform) -> None:
    for role in platform.ports:
        assert httpx.get(f"{platform.url(role)}/health/live").json()["status"] == "ok"
        assert httpx.get(f"{platform.url(role)}/docs").status_code == 200
        assert httpx.get(f"{platform.url(role)}/openapi.json").json()["info"]["title"].startswith("agentrunner")


def test_cli_invoke_prints_the_answer_and_json(platform: RunningPlatform, fake_openai: FakeOpenAI) -> None:
    cli = [sys.executable, "-m", "agentrunner"]
    url = ["--url", platform.url("orchestrator")]
    plain = subprocess.run(
        [*cli, "invoke", "my-assistant", "Capital of France?", *url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    as_json = subprocess.run(
        [*cli, "invoke", "echo-assistant", "hello", "--json", *url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    listing = subprocess.run([*cli, "agents", *url], capture_output=True, text=True, timeout=60, check=False)
    one = subprocess.run(
        [*cli, "agents", "my-assistant", *url], capture_output=True, text=True, timeout=60, check=False
    )
    missing = subprocess.run(
        [*cli, "invoke", "nope", "x", *url], capture_output=True, text=True, timeout=60, check=False
    )

    assert (plain.returncode, plain.stdout.strip()) == (0, fake_openai.reply)
    assert as_json.returncode == 0
    assert '"output": "hello"' in as_json.stdout
    assert listing.returncode == 0
    assert "my-assistant" in listing.stdout
    assert "ANTHROPIC_API_KEY not set" in listing.stdout
    assert "MCP server 'tickets' unreachable" in listing.stdout
    assert "MCP_RETRY_SECONDS" not in listing.stdout  # the list shows the short reason only
    assert one.returncode == 0, one.stderr
    assert "MCP_RETRY_SECONDS" in one.stdout  # the agent's own view: the whole reason
    assert "http://127.0.0.1:9/mcp" in one.stdout
    assert missing.returncode == 1
    assert "agent_not_found" in missing.stderr


def test_operator_cli_lists_runs_shows_one_and_reports_usage_schedules_and_dead_letters(
    platform: RunningPlatform,
) -> None:
    record = invoke(platform, "echo-assistant", {"task_data": {"prompt": "for the operators"}}).json()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "agentrunner", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    orchestrator = ["--url", platform.url("orchestrator")]
    runs = cli("runs", "--agent", "echo-assistant", "--status", "succeeded", *orchestrator)
    one = cli("run", record["execution_id"], *orchestrator)
    usage = cli("usage", "--agent", "echo-assistant", "--url", platform.url("state"))
    schedules = cli("schedules", "--url", platform.url("scheduler"))
    letters = cli("dlq", "list", *orchestrator)
    unknown = cli("dlq", "delete", "no-such-letter", *orchestrator)

    assert runs.returncode == 0, runs.stderr
    assert record["execution_id"] in runs.stdout
    assert "succeeded" in runs.stdout
    assert one.returncode == 0, one.stderr
    assert "for the operators" in one.stdout
    assert record["trace_id"] in one.stdout
    assert usage.returncode == 0, usage.stderr
    assert "echo-assistant" in usage.stdout
    assert schedules.returncode == 0, schedules.stderr
    assert "schedules" in schedules.stdout
    assert letters.returncode == 0, letters.stderr
    assert "0 dead letters" in letters.stdout
    assert unknown.returncode == 1
    assert "dead_letter_not_found" in unknown.stderr


def test_the_api_key_never_appears_in_logs(platform: RunningPlatform) -> None:
    invoke(platform, "my-assistant", {"task_data": {"prompt": "anything"}})

    assert SECRET_KEY not in platform.log_path.read_text()


def test_cli_reports_a_platform_that_is_not_running(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentrunner", "agents", "--url", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )

    assert result.returncode == 1
    assert "agentrunner up" in result.stderr
