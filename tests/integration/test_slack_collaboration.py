"""Slack and collaborative runs together: `/ask` starts a team's plan run from Slack, a
step's question is posted back with buttons, a click answers it, the run resumes and the
team's answer arrives in Slack, on a real node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from agentrunner.domain.plan import PlanRunStatus
from tests.fakes.slack_server import FakeSlack, command_body, eventually
from tests.integration.conftest import node_on
from tests.integration.test_collaborative import (
    FAST,
    ONE_QUESTION,
    WORKERS,
    Team,
    _asking_writer,
    _plan_call,
    _team,
)
from tests.integration.test_slack_gateway import _client, _post, _settings


@pytest.fixture
def slack() -> Any:
    with FakeSlack(retry_after=0) as fake:
        yield fake


def _click(slack: FakeSlack, button: dict[str, Any], user: str) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "ana"},
        "team": {"id": "T0001"},
        "channel": {"id": "C2147483705"},
        "response_url": slack.response_url("c1"),
        "trigger_id": "t-click",
        "message": {"text": "question", "blocks": []},
        "actions": [{"action_id": button["action_id"], "block_id": "b1", "value": button["value"], "type": "button"}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


async def test_a_question_from_a_slack_started_run_is_answered_by_a_button_and_the_answer_comes_back(
    tmp_path: Path, slack: FakeSlack
) -> None:
    team = Team([_plan_call(ONE_QUESTION)], steps={"writer": _asking_writer})
    settings = {**_settings(slack, slack_commands={"/ask": "team"}), **FAST}
    async with node_on("memory", tmp_path, {"team.yml": _team(), **WORKERS}, script=team, **settings) as node:
        async with _client(node) as http:
            body = command_body("/ask", "a launch post", response_url=slack.response_url("c1"))
            ack = await _post(http, "/slack/commands", body)
            [question] = await slack.wait_for(1, "/response/c1", timeout=30)
            buttons = [
                e for block in question.body.get("blocks", []) if block["type"] == "actions" for e in block["elements"]
            ]
            eu = next(button for button in buttons if button["value"] == "EU")
            clicked = await _post(http, "/slack/interactions", _click(slack, eu, user="U42"))

            def final() -> Any:
                texts = [m.body.get("text", "") for m in slack.messages("/response/c1")]
                return next((t for t in texts if t.startswith("SYNTHESIS")), None)

            answer = await eventually(final, timeout=30)
        orchestrator = httpx.ASGITransport(app=node.apps()["orchestrator"])
        async with httpx.AsyncClient(transport=orchestrator, base_url="http://o") as api:
            runs = (await api.get("/plan-runs", params={"agent": "team"})).json()

    assert ack.status_code == 200
    assert [b["value"] for b in buttons] == ["EU", "US"]
    assert eu["action_id"].startswith("clarify:")
    assert clicked.status_code == 200
    assert answer.startswith("SYNTHESIS"), "the team's final answer, posted where the command came from"
    listed = runs["items"]
    assert listed[0]["status"] == PlanRunStatus.SUCCEEDED.value
    assert listed[0]["clarifications"][0]["answered_by"] == "U42"
    assert listed[0]["steps"][0]["output"] == "written for EU", "the step ran again with the clicked answer"
    assert listed[0]["origin"]["response_url"] == slack.response_url("c1")
