"""Agent versions (issue 24) against hostile callers: the version number in the path is
bounded and validated (422 before any query), a version of an unknown agent or a number an
agent does not have is a 404, a caller without a key gets nothing, and a version's text and
diff carry no secret and no tool definition (a tenant sees tool names only, as on
`GET /agents/{name}`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agentrunner.node import Node
from tests.security.conftest import TEAM_A_KEY, orchestrator_client, tenants_settings

A = {"X-API-Key": TEAM_A_KEY}

WRITER = """
name: writer
agent_type: writer
execution_mode: autonomous
llm_config: {{provider: echo, model: echo}}
system_prompt: Write.
webhook_url: https://hooks.example.com/in?sig={sig}
tools:
  - name: search
    type: mcp
    url: https://admin:hunter2@{host}/mcp?token=tok-123
    headers: {{Authorization: "Bearer ${{KB_TOKEN}}"}}
"""


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "writer.yml").write_text(WRITER.format(sig="first-sig-value", host="mcp.internal.corp"))
    settings = tenants_settings(tmp_path, agents)
    node = Node(settings)
    async with node.running():
        (agents / "writer.yml").write_text(WRITER.format(sig="second-sig-value", host="mcp2.internal.corp"))
        await node.reload_agents()
        async with orchestrator_client(node) as client:
            yield client


@pytest.mark.parametrize("version", ["0", "-1", "2147483648", "99999999999999999999999", "1.5", "abc", "1%20OR%201=1"])
async def test_a_malformed_or_out_of_range_version_is_refused(http: httpx.AsyncClient, version: str) -> None:
    response = await http.get(f"/agents/writer/versions/{version}", headers=A)

    assert response.status_code == 422, response.text


async def test_an_oversized_agent_name_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/agents/{'x' * 129}/versions", headers=A)

    assert response.status_code == 422, response.text


async def test_a_version_of_an_unknown_agent_or_number_is_missing(http: httpx.AsyncClient) -> None:
    unknown_agent = await http.get("/agents/nobody/versions/1", headers=A)
    unknown_list = await http.get("/agents/nobody/versions", headers=A)
    unknown_number = await http.get("/agents/writer/versions/3", headers=A)

    assert (unknown_agent.status_code, unknown_agent.json()["error"]["code"]) == (404, "agent_not_found")
    assert (unknown_list.status_code, unknown_list.json()["error"]["code"]) == (404, "agent_not_found")
    assert (unknown_number.status_code, unknown_number.json()["error"]["code"]) == (404, "agent_version_not_found")


async def test_versions_need_a_key(http: httpx.AsyncClient) -> None:
    assert (await http.get("/agents/writer/versions")).status_code == 401
    assert (await http.get("/agents/writer/versions/1")).status_code == 401


async def test_a_version_shows_no_secret_and_no_tool_definition(http: httpx.AsyncClient) -> None:
    listed = await http.get("/agents/writer/versions", headers=A)
    shown = [(await http.get(f"/agents/writer/versions/{v}", headers=A)).text for v in (1, 2)]

    assert [v["version"] for v in listed.json()] == [2, 1]
    for body in (listed.text, *shown):
        for secret in ("sig-value", "hunter2", "tok-123", "KB_TOKEN", "internal.corp", "admin:"):
            assert secret not in body
    # What changed still shows: the webhook's URL (its signature masked) and the tool's definition.
    fields = [change["field"] for change in listed.json()[0]["changes"]]
    assert fields == ["tools.search.definition_hash"]


@pytest.mark.parametrize("version", ["0", "-3", "2147483648", "x"])
async def test_an_execution_filter_on_a_malformed_version_is_refused(http: httpx.AsyncClient, version: str) -> None:
    response = await http.get("/executions", params={"agent": "writer", "agent_version": version}, headers=A)

    assert response.status_code == 422, response.text
