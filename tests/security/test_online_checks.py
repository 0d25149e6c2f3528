"""Online checks (issue 24) against hostile input: a check's regex written to backtrack
forever runs in linear time on a long answer (RE2), and one RE2 refuses keeps its agent
from loading; a caller cannot set, drop or forge checks or their results through
`task_data` or the invocation's body; another tenant does not see them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.node import Node
from tests.security.conftest import TEAM_A_KEY, TEAM_B_KEY, orchestrator_client, tenants_settings

A = {"X-API-Key": TEAM_A_KEY}
B = {"X-API-Key": TEAM_B_KEY}
# `(a+)+$` on "aaa...a!" is the textbook catastrophic backtracking of Python's `re`.
CHECKED = (
    "name: checked\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
    "checks:\n  - name: hostile\n    regex: '(a+)+$'\n  - contains: order\n"
)
BACKREFERENCE = (
    "name: backref\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
    "checks: [{regex: '(a+)\\1$'}]\n"
)


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "checked.yml").write_text(CHECKED)
    (agents / "backref.yml").write_text(BACKREFERENCE)
    settings = tenants_settings(tmp_path, agents)
    node = Node(settings)
    async with node.running(), orchestrator_client(node) as client:
        yield client


async def _ended(http: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            execution: dict[str, Any] = (await http.get(f"/executions/{execution_id}", headers=A)).json()
            if execution["status"] not in ("queued", "running"):
                return execution
            await asyncio.sleep(0.05)


async def test_a_backtracking_regex_checks_a_long_answer_in_linear_time(http: httpx.AsyncClient) -> None:
    prompt = "a" * 100_000 + "!"
    started = await http.post("/agents/checked/invoke", json={"task_data": {"prompt": prompt}, "wait": 0}, headers=A)
    assert started.status_code == 202, started.text

    execution = await _ended(http, started.json()["execution_id"])

    assert execution["status"] == "succeeded"
    assert [check["check"] for check in execution["failed_checks"]] == ["hostile", "contains"]


async def test_a_regex_re2_refuses_keeps_the_agent_from_loading(http: httpx.AsyncClient) -> None:
    refused = await http.post("/agents/backref/invoke", json={"task_data": {"prompt": "aa"}, "wait": 0}, headers=A)

    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "agent_unavailable"
    assert "checks.0.regex" in refused.json()["error"]["message"]
    assert "RE2 syntax" in refused.json()["error"]["message"]


async def test_a_caller_cannot_set_drop_or_forge_checks(http: httpx.AsyncClient) -> None:
    forged = {"check": "forged", "kind": "contains", "detail": "planted"}
    body = {
        "task_data": {
            "prompt": "no such thing",
            "checks": [],
            "on_check_failure": "fail",
            "failed_checks": [forged],
        },
        "checks": [],
        "on_check_failure": "fail",
        "failed_checks": [forged],
        "wait": 0,
    }
    started = await http.post("/agents/checked/invoke", json=body, headers=A)
    assert started.status_code == 202, started.text  # the body's unknown fields are ignored

    execution = await _ended(http, started.json()["execution_id"])
    theirs = await http.get(f"/executions/{execution['execution_id']}", headers=B)

    assert execution["status"] == "succeeded", "the agent's own `flag`, not the caller's `fail`"
    assert [check["check"] for check in execution["failed_checks"]] == ["hostile", "contains"]
    assert theirs.status_code == 404
