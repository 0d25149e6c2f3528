"""The web dashboard as an operator uses it, in headless Chromium (Debian's `chromium`,
driven by Playwright through its `executable_path`; no browser download): `agentrunner up`
with API keys on, the key typed into the page, an execution appearing live and its
record with its steps (and a replay's, marked replayed), a plan run's question answered
through the page's form, and a dead letter replayed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from playwright.sync_api import expect

from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.api.ui import STATIC_DIRECTORY
from agentrunner.domain.event import DeadLetter, Event
from tests.conftest import REPO
from tests.e2e.browser import chromium, needs_chromium
from tests.e2e.platform import RunningPlatform, platform_running
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.e2e

KEY = "dashboard-key-7f3a-0123456789abcdef01234567"
SLOW_SECONDS = 4.0  # long enough for the page to show the execution before it ends

AGENTS = {
    "slow.yml": "name: slow\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: slow}\n",
    "writer.yml": (
        "name: writer\nagent_type: t\nexecution_mode: autonomous\ndescription: writes posts\n"
        "llm_config: {provider: openai, model: writer}\n"
    ),
    "needs-key.yml": (
        "name: needs-key\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: anthropic, model: m}\n"
    ),
    "gated.yml": (
        "name: gated\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gated}\n"
        "tools:\n  - {name: current_time, requires_approval: true}\n"
        "checks: [{name: says-the-hour, contains: oclock}]\n"  # its answer fails it: flagged
    ),
    "team.yml": (
        "name: team\nagent_type: t\nexecution_mode: collaborative\nllm_config: {provider: openai, model: coordinator}\n"
        "collaborative_config: {preferred_collaborators: [writer], max_plan_steps: 1}\n"
    ),
    "gated-team.yml": (
        "name: gated-team\nagent_type: t\nexecution_mode: collaborative\n"
        "llm_config: {provider: openai, model: gate-coordinator}\n"
        "collaborative_config: {preferred_collaborators: [gated], max_plan_steps: 1}\n"
    ),
}
PLAN = {"steps": [{"id": "draft", "agent": "writer", "instruction": "draft for the right market"}]}
GATED_PLAN = {"steps": [{"id": "clock", "agent": "gated", "instruction": "tell the time"}]}


def _vendor() -> FakeOpenAI:
    """Answers like OpenAI: `slow` after a while; the team's plan as a tool call; the writer
    asks which market (the `ask_human` tool) until the prompt carries the answer."""

    def answer(body: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
        prompt = json.dumps(body["messages"])
        if body["model"] == "gated":  # asks for the clock (a call that waits for approval), then says it
            told = [str(m["content"]) for m in body["messages"] if m["role"] == "tool"]
            return (f"approved: {told[0][:8]}", None) if told else ("", ("current_time", {}))
        if body["model"] == "slow":
            time.sleep(SLOW_SECONDS)
            return "slow done", None
        if any(tool["function"]["name"] == "submit_plan" for tool in body.get("tools", [])):
            return "", ("submit_plan", GATED_PLAN if body["model"] == "gate-coordinator" else PLAN)
        if body["model"] == "writer":
            if "Their answer:" in prompt:
                return "written for " + prompt.rsplit("Their answer:", 1)[1].split('"')[0].strip(), None
            return "", ("ask_human", {"question": "Which market?", "kind": "choice", "options": ["EU", "US"]})
        return "the team's post", None

    return FakeOpenAI(api_key="sk-dashboard", script=answer)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[RunningPlatform]:
    (tmp_path / "agents").mkdir()
    for name, text in AGENTS.items():
        (tmp_path / "agents" / name).write_text(text)
    with _vendor() as fake:
        env = {
            "ENABLE_API_AUTH": "true",
            "ADMIN_API_KEYS": f"operator:{KEY}",  # an operator: every dead letter is its to see,
            "OPENAI_API_KEY": fake.api_key,
            "OPENAI_BASE_URL": fake.base_url,
            "COLLABORATIVE_POLL_SECONDS": "0.2",
            "BUS_RETRY_DELAYS": "0.05,0.05",  # an event that always fails is a dead letter at once
        }
        with platform_running(tmp_path, env) as running:
            yield running


async def _record_dead_letter(platform: RunningPlatform, execution_id: str) -> None:
    """A dead letter for an invocation of a missing execution, in the platform's database."""
    store = SQLStateStore(f"sqlite+aiosqlite:///{platform.workdir / 'data' / 'agentrunner.db'}", migrate=False)
    await store.start()
    try:
        event = Event(topic="invoke.writer", payload={"execution_id": execution_id}, trace_id=uuid4().hex)
        await store.record_dead_letter(DeadLetter(queue="agent.writer", event=event, error="execution not found"))
    finally:
        await store.close()


def _wait_for_dead_letter(api: httpx.Client, execution_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        letters = api.get("/dead-letters", params={"include_replayed": True}).json()
        for letter in letters:
            if letter["event"]["payload"].get("execution_id") == execution_id:
                return dict(letter)
        time.sleep(0.1)
    raise AssertionError(f"no dead letter for {execution_id}")


def _wait_for_run(api: httpx.Client, run_id: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = api.get(f"/plan-runs/{run_id}")
        if response.status_code == 200:
            run = response.json()
            if run["status"] in statuses:
                return run
        time.sleep(0.1)
    raise AssertionError(f"plan run {run_id} did not reach {statuses}: {run}")


@needs_chromium
def test_an_operator_watches_an_execution_live_and_answers_a_question_in_the_dashboard(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    base = platform.url("orchestrator")
    api = httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=30)
    problems: list[str] = []
    with chromium() as browser:
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            urls: list[str] = []
            page.on("request", lambda request: urls.append(request.url))
            page.on(
                "console",
                lambda message: problems.append(message.text) if "Content Security Policy" in message.text else None,
            )
            expect.set_options(timeout=20_000)

            page.goto(f"{base}/ui")
            expect(page.locator("#key-form")).to_be_visible()  # the API refused the page without a key
            page.fill("#api-key", "not-the-key")
            page.click("#key-form button[type=submit]")
            expect(page.locator("#key-error")).to_have_text("The API refused this key.")
            page.fill("#api-key", KEY)
            page.click("#key-form button[type=submit]")
            expect(page.locator("#connection")).to_have_text("connected")
            expect(page.locator("#executions")).to_be_visible()

            task = {"task_data": {"prompt": "take your time"}, "wait": 0}
            accepted = api.post("/agents/slow/invoke", json=task)
            execution_id = accepted.json()["execution_id"]
            row = page.locator(f'#executions tr[data-execution-id="{execution_id}"]')
            expect(row).to_be_visible()  # no reload: it came in while the page was open
            seen_unfinished = row.locator(".status").get_attribute("data-status")

            row.locator("a").click()
            expect(page.locator("#execution")).to_be_visible()
            detail_before = page.locator("#execution .status").first.get_attribute("data-status")
            # The detail page does not poll: the output and the end come over its event stream.
            expect(page.locator("#execution-output")).to_have_text("slow done")
            expect(page.locator("#execution .status").first).to_have_text("succeeded")
            expect(page.locator("#trace-id")).to_have_text(accepted.json()["trace_id"])
            # Its journal as a timeline: the one model call, read once the run ended.
            step = page.locator("#execution-steps tr.step")
            expect(step).to_have_count(1)
            expect(step.locator("td").nth(1)).to_have_text("model")
            expect(step.locator("td").nth(2)).to_have_text("slow")
            expect(step.locator(".status")).to_have_text("succeeded")
            detail = page.locator("#execution").inner_text()
            page.go_back()
            expect(row.locator(".status")).to_have_text("succeeded")

            # A replay that reuses that call: the page says so, and links its source.
            replay = api.post(f"/executions/{execution_id}/replay", json={"from_step": 1, "wait": 30}).json()
            page.goto(f"{base}/ui/#/executions/{replay['execution_id']}")
            expect(page.locator("#execution-steps tr.step td.replayed")).to_have_text("replayed")
            expect(page.locator(f'#execution a[href="#/executions/{execution_id}"]')).to_be_visible()

            invoked = api.post("/agents/team/invoke", json={"task_data": {"prompt": "a launch post"}, "wait": 0})
            run_id = invoked.json()["plan_run_id"]
            _wait_for_run(api, run_id, {"needs_clarification"})
            page.click("nav a[href='#/plan-runs']")
            page.locator(f'#plan-runs tr[data-plan-run-id="{run_id}"] a').click()
            form = page.locator("form.clarification")
            expect(form).to_contain_text("Which market?")
            page.screenshot(path=str(tmp_path / "question.png"), full_page=True)
            form.get_by_label("EU").check()
            form.locator("button[type=submit]").click()

            run = _wait_for_run(api, run_id, {"succeeded", "failed"})
            expect(page.locator("#plan-result")).to_have_text("the team's post")
            screenshot = tmp_path / "dashboard.png"
            page.screenshot(path=str(screenshot), full_page=True)

            # An invocation whose execution record does not exist fails every delivery: kept as
            # the bus would keep it (a caller can no longer publish `invoke.*`, issue 19).
            with ThreadPoolExecutor(1) as thread:  # off Playwright's loop
                thread.submit(asyncio.run, _record_dead_letter(platform, "never-recorded")).result()
            letter = _wait_for_dead_letter(api, "never-recorded")
            page.click("nav a[href='#/dead-letters']")
            page.locator(f'#dead-letters tr[data-dead-letter="{letter["id"]}"] button.replay').click()
            expect(page.locator(f'#dead-letters tr[data-dead-letter="{letter["id"]}"]')).to_have_count(0)
            replayed = next(
                item
                for item in api.get("/dead-letters", params={"include_replayed": True}).json()
                if item["id"] == letter["id"]
            )

            # The agents list says in one line why an agent cannot run; its page says it all.
            page.click("nav a[href='#/agents']")
            needs_key = page.locator('#agents tr[data-agent="needs-key"]')
            expect(needs_key.locator(".reasons")).to_have_text("ANTHROPIC_API_KEY not set")
            needs_key.locator("a").click()
            expect(page.locator("#agent-reasons li")).to_have_text(
                "provider 'anthropic' needs ANTHROPIC_API_KEY: set it in .env or the environment"
            )
        finally:
            api.close()

    assert seen_unfinished in {"queued", "running"}, "the execution was shown before it ended"
    assert detail_before in {"queued", "running"}, "the detail page opened before it ended"
    assert "take your time" in detail, "the detail shows the input"
    assert "Input tokens" in detail
    assert "Cost" in detail
    assert run["status"] == "succeeded", run
    assert run["steps"][0]["output"] == "written for EU", "the step ran again with the page's answer"
    assert run["clarifications"][0]["answered_by"] == "web dashboard"
    # Replayed: marked so, unless the replayed invocation (of an execution that does not
    # exist) died again before the mark, which records the letter anew, not replayed.
    assert replayed["replayed_at"] is not None or replayed["created_at"] > letter["created_at"], (
        "the page's Replay button replayed it"
    )
    assert screenshot.stat().st_size > 10_000
    assert problems == []
    assert any("/executions/" in url and url.endswith("/events") for url in urls), "the page read the SSE stream"
    assert not any(KEY in url for url in urls), "the key travels in a header, never in a URL"


@needs_chromium
def test_an_operator_approves_a_tool_call_in_the_dashboard(platform: RunningPlatform) -> None:
    base = platform.url("orchestrator")
    api = httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=30)
    with chromium() as browser:
        try:
            page = browser.new_page()
            expect.set_options(timeout=20_000)
            page.goto(f"{base}/ui")
            page.fill("#api-key", KEY)
            page.click("#key-form button[type=submit]")
            expect(page.locator("#connection")).to_have_text("connected")

            accepted = api.post("/agents/gated/invoke", json={"task_data": {"prompt": "what time is it"}, "wait": 0})
            execution_id = accepted.json()["execution_id"]
            page.goto(f"{base}/ui/#/executions/{execution_id}")
            pending = page.locator("#pending-tool-call")
            expect(pending).to_contain_text("current_time")  # shown once it waits, over the stream
            expect(page.locator("#execution .status").first).to_have_text("waiting_approval")
            pending.get_by_role("button", name="Approve").click()
            expect(page.locator("#execution .status").first).to_have_text("succeeded")
            expect(page.locator("#pending-tool-call")).to_have_count(0)
            expect(page.locator("#failed-checks")).to_contain_text("says-the-hour")
            finished = api.get(f"/executions/{execution_id}").json()
        finally:
            api.close()

    assert finished["status"] == "succeeded"
    assert finished["output"].startswith("approved: {")
    assert [call["name"] for call in finished["tool_calls"]] == ["current_time"]
    assert [check["check"] for check in finished["failed_checks"]] == ["says-the-hour"]


@needs_chromium
def test_a_plan_run_shows_the_tool_call_its_step_waits_on_and_links_where_to_approve_it(
    platform: RunningPlatform,
) -> None:
    base = platform.url("orchestrator")
    api = httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=30)
    with chromium() as browser:
        try:
            page = browser.new_page()
            expect.set_options(timeout=20_000)
            page.goto(f"{base}/ui")
            page.fill("#api-key", KEY)
            page.click("#key-form button[type=submit]")
            expect(page.locator("#connection")).to_have_text("connected")

            invoked = api.post("/agents/gated-team/invoke", json={"task_data": {"prompt": "the time"}, "wait": 0})
            run_id = invoked.json()["plan_run_id"]
            _wait_for_run(api, run_id, {"waiting_approval"})
            page.goto(f"{base}/ui/#/plan-runs/{run_id}")
            waiting = page.locator('#plan-run .waiting-step[data-step-id="clock"]')
            expect(waiting).to_contain_text("current_time")
            expect(page.locator("#plan-run .status").first).to_have_text("waiting_approval")
            waiting.get_by_role("link").click()  # to the step's execution, where the call is answered
            pending = page.locator("#pending-tool-call")
            expect(pending).to_contain_text("current_time")
            pending.get_by_role("button", name="Approve").click()
            expect(page.locator("#execution .status").first).to_have_text("succeeded")
            page.goto(f"{base}/ui/#/plan-runs/{run_id}")
            expect(page.locator("#plan-run .status").first).to_have_text("succeeded")
            expect(page.locator("#plan-run .waiting-step")).to_have_count(0)
            run = api.get(f"/plan-runs/{run_id}").json()
        finally:
            api.close()

    assert run["result"] == "the team's post"
    assert run["steps"][0]["output"].startswith("approved: ")


@needs_chromium
def test_an_agents_page_lists_its_versions_and_shows_a_versions_diff(platform: RunningPlatform) -> None:
    base = platform.url("orchestrator")
    api = httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=30)
    (platform.workdir / "agents" / "writer.yml").write_text(
        AGENTS["writer.yml"].replace("description: writes posts", "description: writes short posts")
    )
    deadline = time.monotonic() + 60
    while len(api.get("/agents/writer/versions").json()) < 2:
        assert time.monotonic() < deadline, "the edit was not recorded as version 2"
        time.sleep(0.1)
    with chromium() as browser:
        try:
            page = browser.new_page()
            expect.set_options(timeout=20_000)
            page.goto(f"{base}/ui")
            page.fill("#api-key", KEY)
            page.click("#key-form button[type=submit]")
            expect(page.locator("#connection")).to_have_text("connected")

            page.goto(f"{base}/ui/#/agents/writer")
            second = page.locator('#agent-versions tr[data-version="2"]')
            expect(second.locator("td").nth(3)).to_have_text("description")
            expect(page.locator('#agent-versions tr[data-version="1"]')).to_be_visible()
            second.get_by_role("button", name="v2").click()
            diff = page.locator("#agent-version-diff")
            expect(diff).to_contain_text("-description: writes posts")
            expect(diff).to_contain_text("+description: writes short posts")
        finally:
            api.close()


def test_the_wheel_ships_every_file_of_the_dashboard(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("agentrunner-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("agentrunner/api/static/")}

    assert shipped == {f"agentrunner/api/static/{path.name}" for path in STATIC_DIRECTORY.iterdir()}
    assert "agentrunner/api/static/index.html" in shipped
