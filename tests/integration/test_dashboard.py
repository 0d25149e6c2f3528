"""The web dashboard's files on a real node with API keys on: served at /ui without a key
(they hold no data) under a strict Content-Security-Policy, complete (every module the page
imports is there, nothing from another origin), while every API the page reads still
wants the key; and the schedules the page shows, from the orchestrator's port."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from agentrunner.api.ui import STATIC_DIRECTORY
from tests.integration.conftest import node_on

KEY = "k-dashboard-0123456789abcdef0123456789"
TICKER = (
    "name: ticker\nagent_type: t\nexecution_mode: scheduled\nllm_config: {provider: echo, model: e}\n"
    "schedule_config: {type: interval, interval_seconds: 3600}\n"
)


@pytest.fixture
async def orchestrator(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with node_on(
        "memory", tmp_path, {"ticker.yml": TICKER}, enable_api_auth=True, api_keys=f"dashboard:{KEY}"
    ) as node:
        transport = httpx.ASGITransport(app=node.apps()["orchestrator"])
        async with httpx.AsyncClient(transport=transport, base_url="http://orchestrator") as client:
            yield client


async def test_the_dashboard_is_served_without_a_key_under_a_strict_content_security_policy(
    orchestrator: httpx.AsyncClient,
) -> None:
    redirect = await orchestrator.get("/ui")
    page = await orchestrator.get("/ui/")
    script = await orchestrator.get("/ui/app.js")

    assert redirect.status_code == 308
    assert redirect.headers["location"] == "ui/", "relative: the page works behind a proxy's path prefix too"
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert '<script type="module" src="app.js"></script>' in page.text
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert script.headers["content-security-policy"] == policy


async def test_every_module_the_page_loads_is_served_and_nothing_comes_from_another_origin(
    orchestrator: httpx.AsyncClient,
) -> None:
    index = (await orchestrator.get("/ui/")).text
    wanted = set(re.findall(r'(?:src|href)="([\w.]+\.(?:js|css))"', index))
    served: dict[str, str] = {}
    while wanted - served.keys():
        name = sorted(wanted - served.keys())[0]
        response = await orchestrator.get(f"/ui/{name}")
        assert response.status_code == 200, name
        served[name] = response.text
        wanted |= set(re.findall(r'from "\./([\w.]+\.js)"', response.text))
    files = {path.name for path in STATIC_DIRECTORY.iterdir()}

    assert {"app.js", "api.js", "style.css", "executions.js", "plan_runs.js"} <= served.keys()
    assert files == {*served, "index.html"}, "every file shipped is used, every file used is shipped"
    for name, text in {**served, "index.html": index}.items():
        # The SVG namespace is a name, not an address: charts.js makes its elements in it.
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg\")", text), f"{name} loads nothing from another origin"
        assert "innerHTML" not in text, f"{name} builds the page from text nodes, never HTML strings"
    assert not re.search(r"<script(?![^>]*\bsrc=)", index), "no inline script: the policy would block it"


@pytest.mark.parametrize(
    "path",
    [
        "/agents",
        "/executions",
        "/plan-runs",
        "/schedules",
        "/dead-letters",
        "/executions/x/events",
        "/stats/executions",
        "/stats/cost",
        "/evals",
        "/evals/runs",
        "/evals/scores",
    ],
)
async def test_the_apis_the_dashboard_reads_still_need_the_key(orchestrator: httpx.AsyncClient, path: str) -> None:
    refused = await orchestrator.get(path)
    allowed = await orchestrator.get(path, headers={"X-API-Key": KEY})

    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    assert allowed.status_code in {200, 404}


async def test_a_path_that_climbs_out_of_the_dashboard_gets_no_data(orchestrator: httpx.AsyncClient) -> None:
    climbed = await orchestrator.get("/ui/%2e%2e/agents")
    missing = await orchestrator.get("/ui/nothing.js")

    assert climbed.status_code == 404
    assert "ticker" not in climbed.text
    assert missing.status_code == 404


async def test_the_orchestrator_lists_schedules_with_their_next_fire(tmp_path: Path) -> None:
    # Auth off: with it on, an agent file's schedule is shown to admins only (issue 19;
    # tests/security/test_tenants.py), and a tenant's key sees none.
    async with node_on("memory", tmp_path, {"ticker.yml": TICKER}) as node:
        transport = httpx.ASGITransport(app=node.apps()["orchestrator"])
        async with httpx.AsyncClient(transport=transport, base_url="http://orchestrator") as client:
            response = await client.get("/schedules")

    assert response.status_code == 200
    [view] = response.json()
    assert view["schedule"]["agent"] == "ticker"
    assert view["schedule"]["interval_seconds"] == 3600
    assert datetime.fromisoformat(view["next_fire_at"]) > datetime.now(UTC)
