"""A tool call that waits for a human, answered in Slack (issue 22, items 3 and 4): a run
started by a Slack command whose agent's tool needs approval posts the call with its
buttons where the command came from; a signed click answers the execution, the tool runs
once however many click, the clicked message shows who answered, and the agent's answer
comes back to Slack. On a real node, the bus in memory and on RabbitMQ."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from agentrunner.node import Node
from tests.fakes.slack_server import FakeSlack, Posted, command_body, eventually
from tests.integration.conftest import BUSES, node_on
from tests.integration.test_durable_agents import CountingTools
from tests.integration.test_slack_gateway import _client, _post, _settings
from tests.integration.test_tool_gates import _gated, _model

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
