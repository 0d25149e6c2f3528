"""A tool call that waits for a human, answered in Slack (issue 22, items 3 and 4): a run
started by a Slack command whose agent's tool needs approval posts the call with its
buttons where the command came from; a signed click answers the execution, the tool runs
once however many click, the clicked message shows who answered, and the agent's answer
comes back to Slack. On a real node, the bus in memory and on RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from agentrunner.domain.slack_tool_calls import SLACK_HAPPENED_RESULT
from agentrunner.node import Node
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import BOT_TOKEN, SIGNING_SECRET, FakeSlack, Posted, command_body, eventually
from tests.integration.conftest import BUSES, node_on
from tests.integration.test_collaborative_durable import SYNTHESIS, _scripted, _team
from tests.integration.test_durable_agents import CountingTools, _vendor, _wait_for, embedded_ready
from tests.integration.test_slack_gateway import _client, _post, _settings
from tests.integration.test_tool_gates import _gated, _journaled, _model
from tests.ports import free_port

TEAM = "T0001"  # command_body's team


@pytest.fixture
def slack() -> Any:
    with FakeSlack(retry_after=0) as fake:
        yield fake


def click_body(
    button: dict[str, Any], *, user: str, response_url: str, team: str = TEAM, action_id: str | None = None
) -> bytes:
    """A block_actions interaction as Slack sends it when `user` clicks `button`."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower()},
        "team": {"id": team},
        "channel": {"id": "C2147483705"},
        "response_url": response_url,
        "trigger_id": f"t-{user}",
        "container": {"type": "message", "message_ts": "1700000000.000100"},
        "message": {"text": "a tool call", "blocks": []},
        "actions": [
            {
                "action_id": button["action_id"] if action_id is None else action_id,
                "block_id": "b1",
                "value": button.get("value", ""),
                "type": "button",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def buttons_of(message: Posted) -> list[dict[str, Any]]:
    return [e for block in message.body.get("blocks", []) if block["type"] == "actions" for e in block["elements"]]


async def asked_in_slack(node: Node, slack: FakeSlack, prompt: str = "gated") -> tuple[str, Posted]:
    """Run `/ask prompt` from Slack (answers at response_url c1); the id of its execution and
    the message that shows the call it waits on."""
    async with _client(node) as http:
        ack = await _post(http, "/slack/commands", command_body("/ask", prompt, response_url=slack.response_url("c1")))
    assert ack.status_code == 200, ack.text
    [question] = await slack.wait_for(1, "/response/c1", timeout=30)
    executions = (await node.store.queries.list_executions(agent="gated")).items
    [execution] = [e for e in executions if e.slack_origin is not None]
    return execution.execution_id, question


@pytest.mark.parametrize("bus", BUSES)
async def test_a_gated_call_from_slack_is_shown_with_buttons_approved_by_a_click_and_run_once(
    bus: str, tmp_path: Path, slack: FakeSlack
) -> None:
    asked: Counter[str] = Counter()
    with CountingTools() as tools:
        settings = _settings(slack, slack_commands={"/ask": "gated"}, slack_default_agent="")
        async with node_on(bus, tmp_path, {"gated.yml": _gated(tools.url)}, script=_model(asked), **settings) as node:
            execution_id, question = await asked_in_slack(node, slack)
            waiting = await node.store.executions.get_execution(execution_id)
            approve = next(b for b in buttons_of(question) if b["value"] == "approve")
            # Two people click Approve at once: one answer stands, the tool runs once.
            async with _client(node) as http:
                clicks = await asyncio.gather(
                    *(
                        _post(
                            http,
                            "/slack/interactions",
                            click_body(approve, user=user, response_url=slack.response_url(f"click-{user}")),
                        )
                        for user in ("U42", "U43")
                    )
                )

            def final() -> list[Posted]:
                return [m for m in slack.messages("/response/c1") if m.body.get("text", "").startswith("done")]

            [answer] = await eventually(final, timeout=30)
            [marked] = await slack.wait_for(1, "/response/click-", timeout=30)
            finished = await node.store.executions.get_execution(execution_id)
            await asyncio.sleep(0.3)  # a second update, were one to come, would be here by now
            updates = slack.messages("/response/click-")

    assert waiting.status.value == "waiting_approval"
    section = question.body["blocks"][0]["text"]["text"]
    assert "`kit__step`" in section
    assert '"n": 1' in section, "the call's arguments are shown"
    assert [(b["text"]["text"], b["value"]) for b in buttons_of(question)] == [
        ("Approve", "approve"),
        ("Deny", "deny"),
    ]
    assert approve["action_id"].startswith(f"toolcall:approve:{execution_id}:")
    assert [c.status_code for c in clicks] == [200, 200]
    assert answer.body["text"] == "done: step 1"
    assert dict(tools.calls) == {1: 1}, "approved twice at once: run once"
    assert finished.status.value == "succeeded"
    assert len(updates) == 1, "only the click that answered marks the message"
    assert marked.body["replace_original"] is True
    assert marked.body["text"].startswith(":white_check_mark: Approved by <@U4")
    assert "kit__step" in marked.body["text"]


async def test_a_gated_call_denied_from_slack_is_not_made_and_the_model_reads_the_refusal(
    tmp_path: Path, slack: FakeSlack
) -> None:
    asked: Counter[str] = Counter()
    with CountingTools() as tools:
        settings = _settings(slack, slack_commands={"/ask": "gated"}, slack_default_agent="")
        async with node_on(
            "memory", tmp_path, {"gated.yml": _gated(tools.url)}, script=_model(asked), **settings
        ) as node:
            _, question = await asked_in_slack(node, slack)
            deny = next(b for b in buttons_of(question) if b["value"] == "deny")
            async with _client(node) as http:
                await _post(
                    http, "/slack/interactions", click_body(deny, user="U42", response_url=slack.response_url("click"))
                )

            def final() -> list[Posted]:
                return [m for m in slack.messages("/response/c1") if m.body.get("text", "").startswith("done")]

            [answer] = await eventually(final, timeout=30)
            [marked] = await slack.wait_for(1, "/response/click", timeout=30)

    assert answer.body["text"] == "done: error: a human refused this call, it was not made"
    assert dict(tools.calls) == {}
    assert marked.body["text"].startswith(":no_entry_sign: Denied by <@U42>")


def _embedded_with_slack(tmp_path: Path, fake: FakeOpenAI, slack: FakeSlack, port: int, slack_port: int) -> Any:
    """`agentrunner up` (every role in one process, SQLite in `tmp_path`) with `/ask` routed
    to the journaled agent and Slack answered at the fake Slack."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("SLACK_")}
    env |= {
        "AGENTS_DIR": str(tmp_path / "agents"),
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": "",
        "RABBITMQ_URL": "",
        "ORCHESTRATOR_PORT": str(port),
        "SLACK_PORT": str(slack_port),
        **{f"{role}_PORT": str(free_port()) for role in ("STATE", "CONFIG", "SCHEDULER")},
        "OPENAI_API_KEY": fake.api_key,
        "OPENAI_BASE_URL": fake.base_url,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_API_URL": slack.api_url,
        "SLACK_COMMANDS": "/ask=journaled",
        "EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8",
        "LOG_LEVEL": "WARNING",
    }
    with (tmp_path / "first-run.log").open("wb") as log:
        command = [sys.executable, "-m", "agentrunner", "up"]
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


async def test_a_call_from_slack_killed_under_way_is_asked_in_slack_and_it_happened_goes_on_without_it(
    tmp_path: Path, slack: FakeSlack
) -> None:
    with CountingTools(hold=3) as tools, FakeOpenAI(script=_vendor) as fake:
        agent = _journaled(tools.url)
        (tmp_path / "agents").mkdir()
        (tmp_path / "agents" / "journaled.yml").write_text(agent)
        port, slack_port = free_port(), free_port()
        process = _embedded_with_slack(tmp_path, fake, slack, port, slack_port)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                await embedded_ready(http, process, tmp_path)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{slack_port}", timeout=10) as http:
                body = command_body("/ask", "go", response_url=slack.response_url("c1"))
                ack = await _post(http, "/slack/commands", body)
            await _wait_for(lambda: tools.calls[3] == 1, "tool call 3 never came")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            tools.release()  # the held call ends in a server whose client is gone
        settings = _settings(slack, slack_commands={"/ask": "journaled"}, slack_default_agent="")
        settings |= {"openai_api_key": fake.api_key, "openai_base_url": fake.base_url}
        async with node_on("memory", tmp_path, {"journaled.yml": agent}, **settings) as node:
            [question] = await slack.wait_for(1, "/response/c1", timeout=60)
            happened = next(b for b in buttons_of(question) if b["value"] == "happened")
            async with _client(node) as http:
                body = click_body(happened, user="U42", response_url=slack.response_url("click"))
                clicked = await _post(http, "/slack/interactions", body)

            def final() -> list[Posted]:
                return [m for m in slack.messages("/response/c1") if m.body.get("text", "").startswith("done")]

            [answer] = await eventually(final, timeout=60)
            [marked] = await slack.wait_for(1, "/response/click", timeout=30)

    assert ack.status_code == 200, ack.text
    assert [b["value"] for b in buttons_of(question)] == ["happened", "again", "fail"]
    assert "`kit__step`" in question.body["blocks"][0]["text"]["text"]
    assert clicked.status_code == 200
    assert dict(tools.calls) == {1: 1, 2: 1, 3: 1, 4: 1}, "it happened: not run again"
    # The model reads that it happened and that its result is unknown: never a made-up one.
    assert answer.body["text"] == f"done: step 1, step 2, {SLACK_HAPPENED_RESULT}, step 4"
    assert marked.body["text"].startswith(":white_check_mark: Marked as happened by <@U42>")


async def test_a_gated_call_of_a_plan_step_from_slack_is_asked_in_the_runs_thread_and_approved_there(
    tmp_path: Path, slack: FakeSlack
) -> None:
    """A collaborative run started by `/ask`: its step's execution has no Slack origin of its
    own (the run has it), yet its gated call is posted where the command came from, and a
    click there approves it; the team's answer follows."""
    with CountingTools() as tools:
        agents = {"team.yml": _team("scripted", "coordinator"), "gated.yml": _gated(tools.url)}
        settings = _settings(slack, slack_commands={"/ask": "team"}, slack_default_agent="")
        async with node_on(
            "memory", tmp_path, agents, script=_scripted, collaborative_poll_seconds=0.2, **settings
        ) as node:
            async with _client(node) as http:
                ack = await _post(
                    http, "/slack/commands", command_body("/ask", "go", response_url=slack.response_url("c1"))
                )
                [question] = await slack.wait_for(1, "/response/c1", timeout=30)
                approve = next(b for b in buttons_of(question) if b["value"] == "approve")
                clicked = await _post(
                    http, "/slack/interactions", click_body(approve, user="U42", response_url=slack.response_url("k"))
                )

            def final() -> list[Posted]:
                return [m for m in slack.messages("/response/c1") if m.body.get("text", "") == SYNTHESIS]

            await eventually(final, timeout=30)
            [step] = [e for e in (await node.store.queries.list_executions(agent="gated")).items]

    assert ack.status_code == 200
    assert clicked.status_code == 200
    assert step.slack_origin is None, "the step itself was not started by Slack"
    assert approve["action_id"].startswith(f"toolcall:approve:{step.execution_id}:")
    assert dict(tools.calls) == {1: 1}
    assert step.status.value == "succeeded"
