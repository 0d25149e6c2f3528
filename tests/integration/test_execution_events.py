"""GET /executions/{id}/events (server-sent events): the status as it changes, the text as
the model streams it (when invoked with `stream: true`), then the finished record."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agentrunner.domain.llm import LLMRequest
from agentrunner.node import Node
from tests.integration.conftest import BUSES, node_on

AGENT = "name: talker\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: scripted, model: s}\n"


async def _reply(request: LLMRequest) -> str:
    await asyncio.sleep(0.3)  # time for the watcher to connect before the text flows
    return "one two three four"


@pytest.fixture(params=BUSES)
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Node]:
    async with node_on(request.param, tmp_path, {"talker.yml": AGENT}, script=_reply) as node:
        yield node


def _parse(body: str) -> list[tuple[str, dict[str, object]]]:
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            events.append((fields["event"], json.loads(fields.get("data", "{}"))))
    return events


async def test_a_streamed_execution_is_watched_to_its_end(node: Node) -> None:
    app = node.apps()["orchestrator"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o", timeout=10) as http:
        accepted = await http.post(
            "/agents/talker/invoke", json={"task_data": {"prompt": "go"}, "stream": True, "wait": 0}
        )
        events = _parse((await http.get(f"/executions/{accepted.json()['execution_id']}/events")).text)
        missing = await http.get("/executions/nope/events")

    kinds = [kind for kind, _ in events]
    text = "".join(str(data["text"]) for kind, data in events if kind == "text")
    assert kinds[0] == "status"
    assert ("status", {"status": "running"}) in events
    assert text == "one two three four"
    assert kinds[-1] == "finished"
    assert events[-1][1]["output"] == "one two three four"
    assert events[-1][1]["status"] == "succeeded"
    assert missing.status_code == 404


async def test_watching_an_ended_execution_gives_its_record_at_once(node: Node) -> None:
    app = node.apps()["orchestrator"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o", timeout=10) as http:
        done = (await http.post("/agents/talker/invoke", json={"task_data": {"prompt": "go"}})).json()
        events = _parse((await http.get(f"/executions/{done['execution_id']}/events")).text)

    assert [kind for kind, _ in events] == ["status", "finished"]
    assert events[0][1] == {"status": "succeeded"}
    assert events[1][1]["execution_id"] == done["execution_id"]
