"""The shipped evaluated example (issue 24): `examples/agents/ticket-classifier.yml`, its
judge `answer-grader.yml` and its dataset `examples/evals/ticket-classifier.yml`, run by
`agentrunner eval` against a real `agentrunner up` whose OpenAI is the wire fake (through
the `openai` SDK): every case passes, the JSON and the JUnit XML say so, and the agent's
answers were asked for with OpenAI's `json_schema` response format."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from tests.conftest import REPO
from tests.e2e.platform import start_platform
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.e2e

EXAMPLES = REPO / "examples"
# What a good classifier answers to each ticket of the dataset.
ANSWERS = {
    "log in": {"category": "bug", "severity": "P1", "reason": "Nobody can log in: an outage."},
    "charged twice": {"category": "billing", "severity": "P2", "reason": "A double charge on an invoice."},
    "CSV": {"category": "feature_request", "severity": "P4", "reason": "A wish for a CSV export."},
    "WATCHES": {"category": "other", "severity": "P4", "reason": "Spam."},
}


def _answer(body: dict[str, Any]) -> tuple[str, None]:
    system = next(m["content"] for m in body["messages"] if m["role"] == "system")
    task = next(m["content"] for m in body["messages"] if m["role"] == "user")
    if "grader" in system:
        return json.dumps({"score": 0.8, "reason": "The reason names the symptom."}), None
    return json.dumps(next(answer for words, answer in ANSWERS.items() if words in task)), None


def test_the_shipped_example_passes_its_evaluation(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "evals").mkdir()
    for name in ("ticket-classifier", "answer-grader"):
        shutil.copy(EXAMPLES / "agents" / f"{name}.yml", tmp_path / "agents")
    shutil.copy(EXAMPLES / "evals" / "ticket-classifier.yml", tmp_path / "evals")
    with FakeOpenAI(api_key="sk-evals", script=_answer) as fake:
        platform = start_platform(tmp_path, {"OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url})
        try:
            command = subprocess.run(
                [sys.executable, "-m", "agentrunner", "eval", "ticket-classifier"],
                cwd=tmp_path,
                env={**platform.env, "AGENTRUNNER_URL": platform.url("orchestrator"), "COLUMNS": "200"},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            assert platform.stop() == 0
        formats = [request.get("response_format", {}).get("type") for request in fake.requests]

    assert command.returncode == 0, command.stdout + command.stderr
    [run] = json.loads((tmp_path / "eval-results.json").read_text())["runs"]
    assert (run["status"], run["passed_cases"], run["total_cases"]) == ("passed", 4, 4)
    assert {case["judge"]["score"] for case in run["cases"]} == {0.8}
    suites = ElementTree.parse(tmp_path / "eval-results.xml").getroot()
    assert (suites.get("tests"), suites.get("failures"), suites.get("errors")) == ("4", "0", "0")
    assert formats == ["json_schema"] * 8  # four answers, four verdicts: each asked for its schema
