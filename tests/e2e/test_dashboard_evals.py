"""The dashboard's Evals page (issue 24, item 5) in headless Chromium against a real
`agentrunner up` with two tenants: the shipped evaluated example (`ticket-classifier`, its
judge `answer-grader`, its dataset), its OpenAI the wire fake. A run started with the page's
Run button is followed to its end, each case with its outcome, score, cost, latency and why
it failed, the judge's hostile reason shown as text; after two runs on version 1 and one on
version 2 of the agent, the chart of scores per version has one point per version (from
`GET /evals/scores`), a run whose node died is listed as `error` (abandoned) and not drawn;
a suite whose agent does not exist is refused with the API's error;
another tenant sees none of it. Screenshots kept in build/screenshots/dashboard/."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.eval_run import EvalRun
from agentrunner.domain.execution import utcnow
from tests.conftest import REPO
from tests.e2e.browser import chromium, needs_chromium, open_dashboard
from tests.e2e.platform import RunningPlatform, platform_running
from tests.fakes.openai_server import FakeOpenAI

pytestmark = [
    pytest.mark.e2e,
    needs_chromium,
]

TEAM_A = "team-a-evalpage-0123456789abcdef01234"
TEAM_B = "team-b-evalpage-0123456789abcdef01234"
EXAMPLES = REPO / "examples"
SUITE = "ticket-classifier"
# Told to be exact (its version 2), the classifier also gets the spam right.
EXACT = "  Be exact.\n"
ANSWERS = {
    "log in": {"category": "bug", "severity": "P1", "reason": "Nobody can log in: an outage."},
    "charged twice": {"category": "billing", "severity": "P2", "reason": "A double charge on an invoice."},
    "CSV": {"category": "feature_request", "severity": "P4", "reason": "A wish for a CSV export."},
    "WATCHES": {"category": "other", "severity": "P4", "reason": "Spam."},
}
WRONG_SPAM = {"category": "bug", "severity": "P1", "reason": "wrong-on-v1: an outage"}
# What the judge says of the wrong answer: markup, as a model may well write it.
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> not spam'
# A suite whose agent is not loaded: POST /evals/runs refuses it.
GHOST = "agent: nobody-here\ncases:\n  - name: a\n    task_data: {prompt: hi}\n    expect: [{contains: hi}]\n"


def _answer(body: dict[str, Any]) -> tuple[str, None]:
    system = next(m["content"] for m in body["messages"] if m["role"] == "system")
    task = next(m["content"] for m in body["messages"] if m["role"] == "user")
    if "grader" in system:
        if "wrong-on-v1" in task:
            return json.dumps({"score": 0.2, "reason": HOSTILE}), None
        return json.dumps({"score": 0.8, "reason": "The reason names the symptom."}), None
    if "WATCHES" in task and "Be exact." not in system:
        return json.dumps(WRONG_SPAM), None
    return json.dumps(next(answer for words, answer in ANSWERS.items() if words in task)), None


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    workdir = tmp_path_factory.mktemp("platform")
    (workdir / "agents").mkdir()
    (workdir / "evals").mkdir()
    for name in ("ticket-classifier", "answer-grader"):
        shutil.copy(EXAMPLES / "agents" / f"{name}.yml", workdir / "agents")
    shutil.copy(EXAMPLES / "evals" / f"{SUITE}.yml", workdir / "evals")
    (workdir / "evals" / "ghost.yml").write_text(GHOST)
    with FakeOpenAI(api_key="sk-evalpage", script=_answer) as fake:
        env = {
            "ENABLE_API_AUTH": "true",
            "API_KEYS": f"team-a:{TEAM_A},team-b:{TEAM_B}",
            "OPENAI_API_KEY": fake.api_key,
            "OPENAI_BASE_URL": fake.base_url,
        }
        with platform_running(workdir, env) as running:
            yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def _open(browser: Browser, platform: RunningPlatform, key: str, problems: list[str]) -> Page:
    return open_dashboard(browser, platform.url("orchestrator"), key, problems, "#/evals")


def _eval_run(platform: RunningPlatform, suite: str) -> dict[str, Any]:
    """Run `suite` as team A through the API and wait (a deadline) until it ended."""
    with httpx.Client(base_url=platform.url("orchestrator"), headers={"X-API-Key": TEAM_A}, timeout=30) as api:
        started = api.post("/evals/runs", json={"suite": suite})
        assert started.status_code == 202, started.text
        deadline = time.monotonic() + 90
        while (run := api.get(f"/evals/runs/{started.json()['run_id']}").json())["finished_at"] is None:
            assert time.monotonic() < deadline, f"eval run did not end: {run}"
            time.sleep(0.2)
    return dict(run)


def _left_by_a_dead_node(platform: RunningPlatform) -> str:
    """Record, in the platform's own database, a run as a node killed mid-run leaves it:
    `running`, its last heartbeat ten minutes old (what `agentrunner up` killed with -9 would
    leave, without killing the node this test needs)."""
    orphan = EvalRun(
        run_id="orphan-of-a-dead-node",
        suite=SUITE,
        agent="ticket-classifier",
        agent_version=1,
        tenant="team-a",
        total_cases=4,
        created_at=utcnow() - timedelta(minutes=10),
    )

    async def record() -> None:
        store = SQLStateStore(f"sqlite+aiosqlite:///{platform.workdir / 'data' / 'agentrunner.db'}")
        await store.start()
        try:
            await store.create_eval_run(orphan)
        finally:
            await store.close()

    # Playwright's sync API holds this thread's event loop: the store runs on a thread of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, record()).result()
    return orphan.run_id


def _new_version(platform: RunningPlatform) -> None:
    """Edit the classifier (its version 2) and wait until the platform recorded it."""
    path = platform.workdir / "agents" / "ticket-classifier.yml"
    path.write_text(path.read_text().replace("severity P4.\n", "severity P4.\n" + EXACT))
    with httpx.Client(base_url=platform.url("orchestrator"), headers={"X-API-Key": TEAM_A}, timeout=30) as api:
        deadline = time.monotonic() + 60
        while len(api.get("/agents/ticket-classifier/versions").json()) < 2:
            assert time.monotonic() < deadline, "the edit was not recorded as version 2"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def pictures() -> Path:
    kept = Path(os.environ.get("DASHBOARD_SCREENSHOTS", REPO / "build" / "screenshots" / "dashboard"))
    kept.mkdir(parents=True, exist_ok=True)
    return kept


def test_the_evals_page_runs_a_suite_shows_its_cases_and_draws_one_point_per_version(
    platform: RunningPlatform, browser: Browser, pictures: Path
) -> None:
    problems: list[str] = []
    page = _open(browser, platform, TEAM_A, problems)
    expect(page.locator("#eval-scores")).to_have_text("No eval run has ended yet.")
    expect(page.locator("#eval-run-form button")).to_have_text(["Run ghost", f"Run {SUITE}"])

    # The Run button starts a run and shows it, case after case, until it ends.
    page.locator(f"#eval-run-form button[data-suite={SUITE}]").click()
    expect(page).to_have_url(re.compile(r"#/evals/[A-Za-z0-9_-]+$"))
    expect(page.locator("#eval-run .fields .status")).to_have_text("passed", timeout=90_000)
    rows = page.locator("#eval-cases tbody tr")
    expect(rows).to_have_count(4)
    spam = page.locator("#eval-cases tr[data-case=spam]")
    expect(spam).to_have_attribute("data-passed", "false")
    expect(spam.locator("td.why-cell")).to_contain_text("json_subset: the output differs at /category")
    expect(spam.locator("td.why-cell")).to_contain_text(HOSTILE)  # the judge's markup, as text
    cells = {
        name: rows.filter(has=page.locator(f"td:text-is('{name}')")).locator("td").all_inner_texts()
        for name in ("outage", "spam")
    }
    pwned = page.evaluate("window.__pwned")
    markup = page.locator("#eval-run script, #eval-run img").count()
    run_id = page.url.split("#/evals/")[1]
    page.screenshot(path=str(pictures / "eval-run.png"), full_page=True)

    # A second run on version 1, then one on version 2: three runs, two points.
    second = _eval_run(platform, SUITE)
    _new_version(platform)
    third = _eval_run(platform, SUITE)
    orphan = _left_by_a_dead_node(platform)
    page.goto(f"{platform.url('orchestrator')}/ui/#/evals")
    chart = page.locator(f"#chart-eval-scores-{SUITE}")
    points = chart.locator("circle[data-key=pass_rate]")
    expect(points).to_have_count(2)
    expect(chart.locator("text.tick")).to_have_text(["v1", "v2"])
    expect(page.locator("#eval-runs tbody tr")).to_have_count(4)
    page.locator(".eval-suite details summary").click()
    versions = page.locator(f"#eval-versions-{SUITE} tbody tr")
    expect(versions).to_have_count(2)
    per_version = [row.locator("td").all_inner_texts()[:4] for row in versions.all()]
    abandoned = page.locator(f'#eval-runs tr[data-run-id="{orphan}"] td.status-cell')
    expect(abandoned.locator(".status")).to_have_text("error")
    expect(abandoned).to_contain_text("abandoned")
    listed = page.locator("#eval-runs tbody tr").evaluate_all("(rows) => rows.map((row) => row.dataset.runId)")
    first_row = page.locator(f'#eval-runs tr[data-run-id="{run_id}"]').locator("td").all_inner_texts()
    values = points.evaluate_all("(all) => all.map((e) => e.dataset.value)")
    page.screenshot(path=str(pictures / "evals.png"), full_page=True)

    # A suite the platform cannot run: the API's refusal, as it said it.
    page.locator("#eval-run-form button[data-suite=ghost]").click()
    expect(page.locator("#eval-run-error")).to_contain_text("nobody-here")
    refusal = page.locator("#eval-run-error").inner_text()

    # Another tenant: no chart, no run of team A's.
    other = _open(browser, platform, TEAM_B, problems)
    expect(other.locator("#eval-runs tbody tr.empty")).to_have_count(1)
    expect(other.locator("#eval-scores")).to_have_text("No eval run has ended yet.")

    assert pwned is None, "the judge's markup ran"
    assert markup == 0
    assert cells["outage"][:2] == ["outage", "passed"]
    assert cells["outage"][3].startswith("$"), cells  # its cost
    assert cells["outage"][4].endswith(("ms", " s")), cells  # its latency
    assert cells["spam"][:3] == ["spam", "failed", "0.20"]
    assert (second["agent_version"], second["pass_rate"]) == (1, 0.75)
    assert (third["agent_version"], third["pass_rate"]) == (2, 1.0)
    assert listed == [third["run_id"], second["run_id"], run_id, orphan], "newest first"
    assert per_version == [["v2", "1", "100%", "0.80"], ["v1", "2", "75%", "0.65"]], "newest version first"
    assert first_row[1:5] == [SUITE, "ticket-classifier v1", "passed", "75% (3/4)"], first_row
    assert values == ["0.75", "1"], "one point per version: v1's two runs are one mean"
    assert refusal.startswith("404 agent_not_found:"), refusal
    assert problems == []
