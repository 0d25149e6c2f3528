"""Eval runs (issue 24) against hostile callers: another tenant's run (and its cases'
executions) is answered as a missing one, also when named as a baseline; bodies and run ids
that are malformed or oversized are refused before anything runs; no key, no run; a judge
that cannot give a verdict and a suite name that tries to leave the evals folder are
refused; the scores per version (`GET /evals/scores`) draw only the caller's tenant's runs,
within bounded parameters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.node import Node
from tests.security.conftest import (
    ADMIN_KEY,
    TEAM_A_KEY,
    TEAM_B_KEY,
    orchestrator_client,
    tenants_settings,
)

A = {"X-API-Key": TEAM_A_KEY}
B = {"X-API-Key": TEAM_B_KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}

ECHO = "name: {name}\nagent_type: t\nexecution_mode: autonomous\nllm_config: {{provider: echo, model: echo}}\n"
SUITES = {
    "hello": "agent: echoer\ncases:\n  - name: hi\n    task_data: {prompt: hi there}\n    expect: [{contains: hi}]\n",
    # A judge must answer {score, reason}: an agent without that output_schema cannot.
    "judged": "agent: echoer\njudge: {agent: echoer, rubric: Good?}\ncases: [{name: a, task_data: {prompt: a}}]\n",
    "broken": "agent: echoer\ncases: [{name: a, expect: [{regex: '(a)\\1'}]}]\n",
}


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "echoer.yml").write_text(ECHO.format(name="echoer"))
    (tmp_path / "evals").mkdir()
    for name, text in SUITES.items():
        (tmp_path / "evals" / f"{name}.yml").write_text(text)
    (tmp_path / "outside.yml").write_text(SUITES["hello"])
    settings = tenants_settings(tmp_path, agents)
    node = Node(settings)
    async with node.running(), orchestrator_client(node) as client:
        yield client


async def _ended(http: httpx.AsyncClient, run_id: str, headers: dict[str, str]) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            run: dict[str, Any] = (await http.get(f"/evals/runs/{run_id}", headers=headers)).json()
            if run["status"] != "running":
                return run
            await asyncio.sleep(0.05)


async def test_another_tenants_run_and_its_executions_read_as_missing(http: httpx.AsyncClient) -> None:
    started = await http.post("/evals/runs", json={"suite": "hello"}, headers=A)
    assert started.status_code == 202, started.text
    run = await _ended(http, started.json()["run_id"], A)
    execution_id = run["cases"][0]["execution_id"]

    theirs = await http.get(f"/evals/runs/{run['run_id']}", headers=B)
    missing = await http.get("/evals/runs/no-such-run", headers=B)
    as_baseline = await http.post("/evals/runs", json={"suite": "hello", "baseline": run["run_id"]}, headers=B)
    their_case = await http.get(f"/executions/{execution_id}", headers=B)
    admin = await http.get(f"/evals/runs/{run['run_id']}", headers=ADMIN)
    listed_to_them = (await http.get("/evals/runs", headers=B)).json()["items"]
    listed_to_admin = (await http.get("/evals/runs", params={"suite": "hello"}, headers=ADMIN)).json()["items"]

    assert (run["status"], run["tenant"], run["passed_cases"]) == ("passed", "team-a", 1)
    assert theirs.status_code == missing.status_code == as_baseline.status_code == 404
    assert theirs.json()["error"]["code"] == missing.json()["error"]["code"] == "eval_run_not_found"
    assert theirs.json()["error"]["message"].replace(run["run_id"], "ID") == missing.json()["error"]["message"].replace(
        "no-such-run", "ID"
    )
    assert their_case.status_code == 404  # the case ran as team-a's execution
    assert admin.status_code == 200
    assert listed_to_them == []
    assert [(r["run_id"], r["passed_cases"], r["regressed"]) for r in listed_to_admin] == [(run["run_id"], 1, 0)]


# One node for every case below (a node per case cost a minute): each is refused before
# anything runs, so none changes what the next one meets.
MALFORMED_BODIES: list[Any] = [
    {},
    {"suite": "../outside"},
    {"suite": "/etc/passwd"},
    {"suite": "hello", "unknown": 1},
    {"suite": "hello", "concurrency": 0},
    {"suite": "hello", "concurrency": 10_000},
    {"suite": "hello", "concurrency": "many"},
    {"suite": "hello", "baseline": "../x"},
    {"suite": "hello", "baseline": "x" * 65},
    {"suite": "x" * 100_000},
    {"suite": ["hello"]},
    ["hello"],
]
MALFORMED_RUN_IDS = ["x" * 65, "a b", "..%2F..%2Fetc", "a;b"]


async def test_malformed_or_oversized_bodies_and_run_ids_are_refused(http: httpx.AsyncClient) -> None:
    bodies = [(await http.post("/evals/runs", json=body, headers=A)).status_code for body in MALFORMED_BODIES]
    ids = [(await http.get(f"/evals/runs/{run_id}", headers=A)) for run_id in MALFORMED_RUN_IDS]
    runs = (await http.get("/executions", headers=ADMIN)).json()["items"]

    assert bodies == [422] * len(MALFORMED_BODIES)
    # An encoded slash splits the path: no route, a plain 404; every other id fails validation.
    assert [(r.status_code, r.json()["error"]["code"]) for r in ids] == [
        (422, "validation_error"),
        (422, "validation_error"),
        (404, "not_found"),
        (422, "validation_error"),
    ]
    assert runs == []  # nothing ran


async def test_no_key_no_run(http: httpx.AsyncClient) -> None:
    assert (await http.post("/evals/runs", json={"suite": "hello"})).status_code == 401
    assert (await http.get("/evals")).status_code == 401


async def test_a_suite_outside_the_folder_a_broken_one_and_a_judge_without_a_verdict_are_refused(
    http: httpx.AsyncClient,
) -> None:
    unknown = await http.post("/evals/runs", json={"suite": "outside"}, headers=A)
    broken = await http.post("/evals/runs", json={"suite": "broken"}, headers=A)
    judged = await http.post("/evals/runs", json={"suite": "judged"}, headers=A)
    listed = await http.get("/evals", headers=A)

    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "eval_suite_not_found")
    assert (broken.status_code, broken.json()["error"]["code"]) == (422, "config_invalid")
    assert "RE2" in broken.json()["error"]["message"]
    assert (judged.status_code, judged.json()["error"]["code"]) == (422, "config_invalid")
    assert "output_schema" in judged.json()["error"]["message"]
    assert listed.json() == {"suites": ["broken", "hello", "judged"]}


async def test_scores_per_version_are_the_callers_tenants_and_their_parameters_bounded(
    http: httpx.AsyncClient,
) -> None:
    started = await http.post("/evals/runs", json={"suite": "hello"}, headers=A)
    run = await _ended(http, started.json()["run_id"], A)

    mine = (await http.get("/evals/scores", headers=A)).json()
    theirs = (await http.get("/evals/scores", headers=B)).json()
    named = (await http.get("/evals/scores", params={"suite": "hello"}, headers=B)).json()
    admin = (await http.get("/evals/scores", params={"suite": "hello"}, headers=ADMIN)).json()
    no_key = await http.get("/evals/scores")
    bad = [
        (await http.get("/evals/scores", params=params, headers=A)).status_code
        for params in ({"runs": 0}, {"runs": 501}, {"runs": "many"}, {"suite": "../hello"}, {"suite": "x" * 10_000})
    ]

    assert run["status"] == "passed"
    assert [(s["suite"], [(v["agent_version"], v["runs"]) for v in s["versions"]]) for s in mine["suites"]] == [
        ("hello", [(1, 1)])
    ]
    assert mine["suites"][0]["versions"][0]["last_run_id"] == run["run_id"]
    assert theirs == named == {"suites": [], "runs_read": 0}  # another tenant's runs are not drawn
    assert admin["runs_read"] == 1
    assert no_key.status_code == 401
    assert bad == [422] * 5
