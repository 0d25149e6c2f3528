"""Slack as a user sets it up: `agentrunner up` with the app's secrets in its environment,
the quick start's agent subscribed to `slack.command.ask` and routed by SLACK_COMMANDS,
`/ask` signed as Slack signs it, answered once at the fake response_url."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.platform import start_platform
from tests.fakes.slack_server import BOT_TOKEN, SIGNING_SECRET, FakeSlack, command_body, slack_headers

pytestmark = pytest.mark.e2e

AGENT = """
name: my-assistant
agent_type: task_executor
execution_mode: autonomous
llm_config: {provider: echo, model: echo}
event_subscriptions:
  - "slack.command.ask"
"""


def test_ask_from_slack_is_acked_then_answered_once(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "my-assistant.yml").write_text(AGENT)
    with FakeSlack() as slack:
        env = {
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_COMMANDS": "/ask=my-assistant",
            "SLACK_API_URL": slack.api_url,
            "EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8",  # the fake Slack listens on loopback
        }
        platform = start_platform(tmp_path, env)
        try:
            body = command_body("/ask", "What is the capital of France?", response_url=slack.response_url("e2e"))
            headers = {"content-type": "application/x-www-form-urlencoded", **slack_headers(body)}
            ack = httpx.post(f"{platform.url('slack')}/slack/commands", content=body, headers=headers, timeout=10)
            forged = httpx.post(
                f"{platform.url('slack')}/slack/commands",
                content=body,
                headers={**headers, **slack_headers(body, "guessed-secret")},
                timeout=10,
            )
            deadline = time.monotonic() + 30
            while not slack.messages("/response/e2e") and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            answers = slack.messages("/response/e2e")
            executions = httpx.get(f"{platform.url('orchestrator')}/executions", timeout=10).json()["items"]
        finally:
            assert platform.stop() == 0
        logs = platform.log_path.read_text()
        refused = [record for record in platform.log_records() if record.get("message") == "slack request refused"]

    assert ack.status_code == 200
    assert ack.json()["response_type"] == "ephemeral"
    assert forged.status_code == 401
    assert len(answers) == 1
    assert "What is the capital of France?" in answers[0].body["text"]
    assert len(executions) == 1, "routed and subscribed: one run"
    [record] = refused
    assert "does not match" in json.dumps(record)
    assert "capital" not in json.dumps(record), "a refused request is logged without its body"
    assert SIGNING_SECRET not in logs
    assert BOT_TOKEN not in logs
