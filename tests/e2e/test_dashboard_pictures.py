"""The dashboard's pictures (issue 24, item 5) in headless Chromium against a real
`agentrunner up` with two tenants and an admin: the overview's charts (executions per
minute by status, p50/p95 latency, cost per day by agent, and by tenant for an admin over
every tenant, an eval suite's scores per version once it has a run) drawn from the API's
aggregates, a tenant seeing only its own;
a collaborative plan run drawn as the graph of its steps with their states; a version of
an agent beside the previous one. Each page's screenshot is kept in
build/screenshots/dashboard/ (or $DASHBOARD_SCREENSHOTS)."""

from __future__ import annotations

import difflib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import REPO
from tests.e2e.browser import chromium, needs_chromium, open_dashboard
from tests.e2e.platform import RunningPlatform, platform_running
from tests.fakes.openai_server import FakeOpenAI

pytestmark = [
    pytest.mark.e2e,
    needs_chromium,
]

TEAM_A = "team-a-pictures-0123456789abcdef0123"
TEAM_B = "team-b-pictures-0123456789abcdef0123"
ADMIN = "admin-pictures-0123456789abcdef012345"

MODEL = "llm_config: {provider: openai, model: gpt-4o-mini}\n"  # priced: the runs have a cost
AGENTS = {
    "writer.yml": f"name: writer\nagent_type: t\nexecution_mode: autonomous\ndescription: writes posts\n{MODEL}",
    "reviewer.yml": f"name: reviewer\nagent_type: t\nexecution_mode: autonomous\n{MODEL}",
    "team.yml": (
        f"name: team\nagent_type: t\nexecution_mode: collaborative\n{MODEL}"
        "collaborative_config: {preferred_collaborators: [writer, reviewer], max_plan_steps: 4}\n"
    ),
}
# A diamond: review reads the draft, polish only waits for it, and the last step reads both.
PLAN: dict[str, list[dict[str, Any]]] = {
    "steps": [
        {"id": "draft", "agent": "writer", "instruction": "draft the post"},
        {"id": "review", "agent": "reviewer", "instruction": "review it", "inputs": ["draft"]},
        {"id": "polish", "agent": "writer", "instruction": "polish the style", "depends_on": ["draft"]},
        {"id": "publish", "agent": "reviewer", "instruction": "approve it", "inputs": ["review", "polish"]},
    ]
}
STEPS = [step["id"] for step in PLAN["steps"]]
# An eval suite of the reviewer: on its first version one case passes and one fails (50 %);
# told to be thorough (its second version), it writes the missing word too (100 %).
EVAL_SUITE = """
agent: reviewer
threshold: 0.5
cases:
  - name: answers
    task_data: {prompt: "a launch post"}
    expect: [{contains: "done"}]
  - name: never
    task_data: {prompt: "a launch post"}
    expect: [{contains: "a word it never writes"}]
"""


def _answer(body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    """The team's plan; the last step asks a human first (so the graph shows a step waiting
    beside steps done); every other call, a short answer."""
    tools = {tool["function"]["name"] for tool in body.get("tools", [])}
    prompt = json.dumps(body["messages"])
    if "submit_plan" in tools:
        return "", ("submit_plan", PLAN)
    if "ask_human" in tools and "approve it" in prompt and "Their answer:" not in prompt:
        return "", ("ask_human", {"question": "Publish it now?", "kind": "confirm"})
    if "Be thorough" in prompt:
        return "done, with a word it never writes", None
    return f"done: {json.dumps(body['messages'][-1]['content'])[:40]}", None


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    workdir = tmp_path_factory.mktemp("platform")
    (workdir / "agents").mkdir()
    for name, text in AGENTS.items():
        (workdir / "agents" / name).write_text(text)
    (workdir / "evals").mkdir()
    (workdir / "evals" / "reviewer-basics.yml").write_text(EVAL_SUITE)
    with FakeOpenAI(api_key="sk-pictures", script=_answer) as fake:
        env = {
            "ENABLE_API_AUTH": "true",
            "API_KEYS": f"team-a:{TEAM_A},team-b:{TEAM_B}",
            "ADMIN_API_KEYS": f"ops:{ADMIN}",
            "OPENAI_API_KEY": fake.api_key,
            "OPENAI_BASE_URL": fake.base_url,
            "COLLABORATIVE_POLL_SECONDS": "0.2",
        }
        with platform_running(workdir, env) as running:
            yield running


@pytest.fixture(scope="module")
def pictures() -> Path:
    # Outside pytest's temp roots, which other runs on the machine rotate away.
    kept = Path(os.environ.get("DASHBOARD_SCREENSHOTS", REPO / "build" / "screenshots" / "dashboard"))
    kept.mkdir(parents=True, exist_ok=True)
    return kept


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def problems() -> list[str]:
    return []


def _open(browser: Browser, platform: RunningPlatform, key: str, problems: list[str]) -> Page:
    return open_dashboard(browser, platform.url("orchestrator"), key, problems, "")


def _invoke(platform: RunningPlatform, key: str, agent: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{platform.url('orchestrator')}/agents/{agent}/invoke",
        json={"task_data": {"prompt": "a launch post"}, "wait": 30},
        headers={"X-API-Key": key},
        timeout=60,
    )
    assert answer.status_code in (200, 202), answer.text
    return dict(answer.json())


def _eval_run(platform: RunningPlatform, key: str, suite: str) -> dict[str, Any]:
    """Start an eval run of `suite` and wait (a deadline) until it ended."""
    api = httpx.Client(base_url=platform.url("orchestrator"), headers={"X-API-Key": key}, timeout=30)
    with api:
        started = api.post("/evals/runs", json={"suite": suite})
        assert started.status_code == 202, started.text
        deadline = time.monotonic() + 60
        while (run := api.get(f"/evals/runs/{started.json()['run_id']}").json())["finished_at"] is None:
            assert time.monotonic() < deadline, f"eval run did not end: {run}"
            time.sleep(0.2)
    return dict(run)


def _wait_for_version(platform: RunningPlatform, agent: str, version: int) -> None:
    api = httpx.Client(base_url=platform.url("orchestrator"), headers={"X-API-Key": ADMIN}, timeout=30)
    with api:
        deadline = time.monotonic() + 60
        while len(api.get(f"/agents/{agent}/versions").json()) < version:
            assert time.monotonic() < deadline, f"the edit of {agent} was not recorded as version {version}"
            time.sleep(0.1)


# Pairs of texts for diff.js: a change, a removal and an addition in far apart hunks, a
# removal at the start, a line added at the end, a text replaced whole.
_LINES = [f"line {n}" for n in range(1, 21)]
DIFFS = {
    "hunks": (
        "\n".join(_LINES) + "\n",
        "\n".join(["line 1", "line two", *_LINES[2:9], *_LINES[10:18], "new 18b", *_LINES[18:], "tail"]) + "\n",
    ),
    "start": ("a\nb\nc\n", "b\nc\n"),
    "whole": ("a\nb\n", "x\ny\nz\n"),
}


def _side_by_side(page: Page, before: str, after: str) -> list[list[str]]:
    """The rows (old number, old text, new number, new text) diff.js draws for two texts."""
    diff = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), "a v1", "a v2"))
    rows: list[list[str]] = page.evaluate(
        """async ([text, diff]) => {
            const { sideBySide } = await import(new URL("diff.js", document.baseURI).href);
            const table = sideBySide(text, diff, { before: "v1", after: "v2" });
            const cells = (row) => [...row.children].map((cell) => cell.textContent);
            return [...table.querySelectorAll("tbody tr")].map(cells);
        }""",
        [after, diff],
    )
    return rows


def _values(page: Page, selector: str) -> list[float]:
    return [float(value) for value in page.locator(selector).evaluate_all("(all) => all.map((e) => e.dataset.value)")]


def test_the_overview_draws_a_tenants_executions_latency_and_cost(
    platform: RunningPlatform, browser: Browser, pictures: Path, problems: list[str]
) -> None:
    ran = [_invoke(platform, TEAM_A, "writer") for _ in range(3)] + [_invoke(platform, TEAM_A, "reviewer")]
    ran_b = [_invoke(platform, TEAM_B, "reviewer") for _ in range(2)]
    assert {execution["status"] for execution in ran + ran_b} == {"succeeded"}

    page = _open(browser, platform, TEAM_A, problems)
    page.click("nav a[href='#/overview']")
    expect(page.locator("#executions-total")).to_have_text("4 executions, 0 failed or timed out")
    succeeded = _values(page, "#chart-executions rect[data-key=succeeded]")
    p50 = _values(page, "#chart-latency circle[data-key=p50]")
    p95 = _values(page, "#chart-latency circle[data-key=p95]")
    expect(page.locator("#chart-cost rect[data-key=writer]")).to_have_count(1)  # today's bar
    expect(page.locator("#chart-cost rect[data-key=reviewer]")).to_have_count(1)
    expect(page.locator("select[name=tenant]")).to_be_hidden()  # a tenant picks no other
    expect(page.locator("#chart-cost-tenants")).to_have_count(0)  # nor sees cost by tenant
    seen_by_a = page.locator("#view").inner_text()
    page.screenshot(path=str(pictures / "overview-tenant.png"), full_page=True)
    page.select_option("select[name=agent]", "reviewer")  # one agent's figures
    expect(page.locator("#executions-total")).to_have_text("1 execution, 0 failed or timed out")
    expect(page.locator("#chart-cost rect[data-key=writer]")).to_have_count(0)
    expect(page.locator("#chart-cost rect[data-key=reviewer]")).to_have_count(1)

    admin = _open(browser, platform, ADMIN, problems)
    admin.goto(f"{platform.url('orchestrator')}/ui/#/overview")
    expect(admin.locator("#executions-total")).to_have_text("6 executions, 0 failed or timed out")
    # Every tenant: cost by tenant beside cost by agent, one series (a bar today) per tenant.
    by_tenant = admin.locator("#chart-cost-tenants")
    expect(by_tenant.locator("rect[data-key=team-a]")).to_have_count(1)
    expect(by_tenant.locator("rect[data-key=team-b]")).to_have_count(1)
    expect(admin.locator("#chart-cost-tenants-panel .legend li")).to_have_text(["team-a", "team-b"])
    tenant_keys = set(by_tenant.locator("rect").evaluate_all("(all) => all.map((e) => e.dataset.key)"))
    tenant_cost = sum(_values(admin, "#chart-cost-tenants rect"))
    agent_cost = sum(_values(admin, "#chart-cost rect"))
    beside = [admin.locator(f"#{chart}").bounding_box() for chart in ("chart-cost", "chart-cost-tenants")]
    admin.screenshot(path=str(pictures / "overview-admin-cost-by-tenant.png"), full_page=True)
    admin.select_option("select[name=tenant]", "team-b")
    expect(admin.locator("#executions-total")).to_have_text("2 executions, 0 failed or timed out")
    expect(admin.locator("#cost-total")).to_contain_text("for team-b")
    expect(admin.locator("#chart-cost rect[data-key=writer]")).to_have_count(0)
    expect(admin.locator("#chart-cost-tenants")).to_have_count(0)  # one tenant picked: by agent only
    admin.screenshot(path=str(pictures / "overview-admin-team-b.png"), full_page=True)
    expect(admin.locator("#overview-evals")).to_be_empty()  # no eval run yet: no section at all

    # The reviewer evaluated on its version 1, then on version 2: its suite's chart shows both.
    first = _eval_run(platform, ADMIN, "reviewer-basics")
    (platform.workdir / "agents" / "reviewer.yml").write_text(AGENTS["reviewer.yml"] + "system_prompt: Be thorough.\n")
    _wait_for_version(platform, "reviewer", 2)
    second = _eval_run(platform, ADMIN, "reviewer-basics")
    admin.reload()
    points = admin.locator("#chart-eval-reviewer-basics circle[data-key=pass_rate]")
    expect(points).to_have_count(2)
    expect(admin.locator("#chart-eval-reviewer-basics text.tick")).to_have_text(["v1", "v2"])
    eval_points = points.evaluate_all("(all) => all.map((e) => e.dataset.value)")
    admin.screenshot(path=str(pictures / "overview-evals.png"), full_page=True)

    assert sum(succeeded) == 4
    assert (first["pass_rate"], first["agent_version"]) == (0.5, 1)
    assert (second["pass_rate"], second["agent_version"]) == (1.0, 2)
    assert eval_points == ["0.5", "1"], "oldest first, each on its version"
    assert p50, "a p50 dot where executions ended"
    assert all(0 < low <= high < 60 for low, high in zip(p50, p95, strict=True))
    assert "team-b" not in seen_by_a
    assert tenant_keys == {"team-a", "team-b"}
    assert tenant_cost == pytest.approx(agent_cost)
    assert tenant_cost > 0
    by_agent_box, by_tenant_box = beside
    assert by_agent_box is not None
    assert by_tenant_box is not None
    assert by_agent_box["y"] == by_tenant_box["y"], "side by side"
    assert by_agent_box["x"] + by_agent_box["width"] <= by_tenant_box["x"]
    assert problems == []
    assert (pictures / "overview-tenant.png").stat().st_size > 10_000


def test_a_plan_run_is_drawn_as_the_graph_of_its_steps_with_their_states(
    platform: RunningPlatform, browser: Browser, pictures: Path, problems: list[str]
) -> None:
    invoked = httpx.post(
        f"{platform.url('orchestrator')}/agents/team/invoke",
        json={"task_data": {"prompt": "a launch post"}, "wait": 0},
        headers={"X-API-Key": ADMIN},
        timeout=30,
    ).json()
    run_id = invoked["plan_run_id"]

    page = _open(browser, platform, ADMIN, problems)
    page.goto(f"{platform.url('orchestrator')}/ui/#/plan-runs/{run_id}")
    node = {step: page.locator(f'#plan-graph g.plan-node[data-step-id="{step}"]') for step in STEPS}
    expect(page.locator("#plan-graph g.plan-node")).to_have_count(4)
    # The last step asks a question: the graph shows it waiting after the three done.
    expect(node["publish"]).to_have_attribute("data-status", "needs_clarification", timeout=60_000)
    waiting = {step: node[step].get_attribute("data-status") for step in STEPS}
    page.screenshot(path=str(pictures / "plan-graph-waiting.png"), full_page=True)
    form = page.locator("form.clarification")
    form.get_by_label("yes").check()
    form.locator("button[type=submit]").click()
    expect(page.locator("#plan-run .status").first).to_have_text("succeeded", timeout=60_000)
    expect(node["publish"]).to_have_attribute("data-status", "succeeded")  # redrawn as it moved on
    edges = page.locator("#plan-graph path.edge")
    expect(edges).to_have_count(4)
    expect(page.locator("#plan-graph path.edge.order-only")).to_have_count(1)  # polish only waits for draft
    columns = {step: node[step].get_attribute("transform") for step in STEPS}
    page.screenshot(path=str(pictures / "plan-graph.png"), full_page=True)
    node["review"].click()  # to the step's execution
    expect(page.locator("#execution")).to_be_visible()

    assert waiting == {
        "draft": "succeeded",
        "review": "succeeded",
        "polish": "succeeded",
        "publish": "needs_clarification",
    }
    x = {step: float(str(transform).split("(")[1].split(",")[0]) for step, transform in columns.items()}
    assert x["draft"] < x["review"] == x["polish"] < x["publish"], columns
    assert problems == []


def test_a_version_is_shown_beside_the_previous_one(
    platform: RunningPlatform, browser: Browser, pictures: Path, problems: list[str]
) -> None:
    api = httpx.Client(base_url=platform.url("orchestrator"), headers={"X-API-Key": ADMIN}, timeout=30)
    (platform.workdir / "agents" / "writer.yml").write_text(
        AGENTS["writer.yml"].replace("description: writes posts", "description: writes short posts")
        + "tags: [marketing]\n"
    )
    deadline = time.monotonic() + 60
    while len(api.get("/agents/writer/versions").json()) < 2:
        assert time.monotonic() < deadline, "the edit was not recorded as version 2"
        time.sleep(0.1)
    api.close()

    page = _open(browser, platform, TEAM_A, problems)
    page.goto(f"{platform.url('orchestrator')}/ui/#/agents/writer")
    page.locator('#agent-versions tr[data-version="2"]').get_by_role("button", name="v2").click()
    sides = page.locator("#agent-version-side-by-side")
    changed = sides.locator("tr.changed", has_text="description")
    expect(changed.locator("td.old")).to_have_text("description: writes posts")
    expect(changed.locator("td.new")).to_have_text("description: writes short posts")
    expect(sides.locator("td.new", has_text="marketing")).to_have_count(1)
    expect(sides.locator("td.old", has_text="marketing")).to_have_count(0)
    expect(page.locator("#agent-version-diff")).to_contain_text("+description: writes short posts")  # unified, below
    kinds = sides.locator("tbody tr").evaluate_all("(rows) => rows.map((row) => row.dataset.kind)")
    page.screenshot(path=str(pictures / "version-side-by-side.png"), full_page=True)
    # The page's own diff.js over texts that change in several places: either side is its text.
    drawn = {name: _side_by_side(page, before, after) for name, (before, after) in DIFFS.items()}

    text = httpx.get(
        f"{platform.url('orchestrator')}/agents/writer/versions/2", headers={"X-API-Key": TEAM_A}, timeout=30
    ).json()["text"]
    assert set(kinds) <= {"same", "changed", "added", "removed"}
    assert len([kind for kind in kinds if kind != "removed"]) == len(text.splitlines()), "each line, once"
    assert kinds.count("same") >= 3, "the unchanged lines are shown too, beside each other"
    for name, (before, after) in DIFFS.items():
        assert [row[1] for row in drawn[name] if row[0]] == before.splitlines(), name
        assert [row[3] for row in drawn[name] if row[2]] == after.splitlines(), name
        assert [row[0] for row in drawn[name] if row[0]] == [str(n) for n in range(1, before.count("\n") + 1)]
        assert [row[2] for row in drawn[name] if row[2]] == [str(n) for n in range(1, after.count("\n") + 1)]
    assert problems == []
