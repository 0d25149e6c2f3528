"""Eval files (domain/eval_suite.py, adapters/config/evals.py) parsed as strictly as agent
files, and how a run's cases are scored and compared (domain/eval_run.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentrunner.adapters.config.evals import EvalFiles
from agentrunner.cli import app
from agentrunner.domain.agent_document import MAX_AGENT_DOCUMENT_BYTES, AgentFileError
from agentrunner.domain.errors import EvalSuiteNotFoundError
from agentrunner.domain.eval_run import EvalRun, EvalRunStatus, JudgeVerdict, case_result, compare, finished
from agentrunner.domain.eval_suite import EvalFileError, EvalSuite, JudgeSpec, parse_eval_document
from agentrunner.domain.expectations import RunFacts

SUITE = """\
agent: triage
description: refunds
threshold: 0.5
judge: {agent: grader, rubric: Is it polite?, min_score: 0.7}
cases:
  - name: refund
    task_data: {prompt: I want my money back}
    expect:
      - contains: refund
      - tool_not_called: delete_order
  - name: greeting
    session: s-1
    task_data: {prompt: hello}
    judge: {agent: strict-grader, rubric: Is it short?}
"""


def _parse(text: str) -> EvalSuite:
    return parse_eval_document(text, "evals/triage.yml", "triage")


def test_an_eval_file_is_its_agent_cases_expectations_and_judges() -> None:
    suite = _parse(SUITE)

    assert (suite.name, suite.agent, suite.threshold) == ("triage", "triage", 0.5)
    assert [case.name for case in suite.cases] == ["refund", "greeting"]
    assert [rule.kind for rule in suite.cases[0].expect] == ["contains", "tool_not_called"]
    assert suite.judge_of(suite.cases[0]) == JudgeSpec(agent="grader", rubric="Is it polite?", min_score=0.7)
    assert suite.judge_of(suite.cases[1]) == JudgeSpec(agent="strict-grader", rubric="Is it short?")
    assert suite.judges == {"grader", "strict-grader"}
    assert suite.cases[1].session == "s-1"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (SUITE.replace("description:", "descripton:"), "descripton"),  # unknown keys are errors
        (SUITE.replace("    expect:", "    expects:"), "cases.0.expects"),
        (SUITE.replace("- contains: refund", "- contians: refund"), "cases.0.expect.0"),
        (SUITE.replace("threshold: 0.5", "threshold: 2"), "threshold"),
        (SUITE.replace("name: greeting", "name: refund"), "two cases are named 'refund'"),
        (SUITE.replace("agent: triage", "agent: Not An Agent"), "agent"),
        (SUITE.replace("- contains: refund", "- regex: '(a)\\1'"), "RE2"),
        ("agent: triage\ncases: []\n", "cases"),
        ("agent: triage\nname: other\ncases: [{name: a}]\n", "named by its file"),
        ("agent: triage\nagent: other\ncases: [{name: a}]\n", "duplicate key"),
        ("- just\n- a list\n", "expected a mapping"),
        ("agent: [unclosed\n", "YAML syntax error"),
    ],
)
def test_a_wrong_eval_file_is_refused_saying_where(text: str, where: str) -> None:
    with pytest.raises(EvalFileError) as refused:
        _parse(text)

    assert where in str(refused.value)
    assert str(refused.value).startswith("invalid eval file evals/triage.yml")


def test_yaml_aliases_are_refused_before_anything_is_built() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nagent: triage\n"

    with pytest.raises(EvalFileError, match="anchor"):
        _parse(bomb)


def test_an_oversized_eval_file_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "big.yml").write_text("agent: triage\n# " + "x" * MAX_AGENT_DOCUMENT_BYTES + "\n")

    with pytest.raises(AgentFileError, match="over the limit"):
        EvalFiles(tmp_path).load("big")


def test_suites_are_found_by_file_name_and_a_name_cannot_leave_the_folder(tmp_path: Path) -> None:
    (tmp_path / "triage.yml").write_text(SUITE)
    (tmp_path / "notes.txt").write_text("not a suite")
    (tmp_path.parent / "outside.yml").write_text(SUITE)
    files = EvalFiles(tmp_path)

    assert files.names() == ["triage"]
    assert files.load("triage").agent == "triage"
    for name in ("../outside", "missing", "/etc/passwd", "Triage"):
        with pytest.raises(EvalSuiteNotFoundError, match="suites: triage"):
            files.load(name)
    assert EvalFiles(tmp_path / "none").names() == []


def _run(cases: list[tuple[str, bool, float]], *, threshold: float = 1.0) -> EvalRun:
    suite = _parse(SUITE)
    results = [
        case_result(
            suite.cases[0], RunFacts(status="succeeded", output="a refund" if passed else "no"), execution_id=name
        ).model_copy(update={"case": name, "score": score})
        for name, passed, score in cases
    ]
    return EvalRun(
        run_id="r", suite="triage", agent="triage", threshold=threshold, total_cases=len(cases), cases=results
    )


def test_a_case_passes_when_its_execution_succeeded_every_rule_held_and_its_judge_agreed() -> None:
    suite = _parse(SUITE)
    case = suite.cases[0]
    judge = suite.judge_of(case)
    good = RunFacts(status="succeeded", output="your refund is on its way", cost_usd=0.0, latency_ms=12.0)

    approved = case_result(case, good, execution_id="e1", judge=judge, verdict=JudgeVerdict(agent="grader", score=0.9))
    doubted = case_result(case, good, execution_id="e1", judge=judge, verdict=JudgeVerdict(agent="grader", score=0.6))
    unjudged = case_result(case, good, execution_id="e1", judge=judge, verdict=JudgeVerdict(agent="grader", error="x"))
    wrong = case_result(case, RunFacts(status="succeeded", output="no"), execution_id="e2")
    failed = case_result(case, RunFacts(status="failed"), execution_id="e3")

    assert (approved.passed, approved.score, approved.latency_ms) == (True, 0.9, 12.0)
    assert (doubted.passed, doubted.score) == (False, 0.6)
    assert (unjudged.passed, unjudged.score) == (False, 0.0)
    assert (wrong.passed, wrong.score) == (False, 0.5)  # one of its two rules held
    assert [rule.passed for rule in wrong.expectations] == [False, True]
    assert (failed.passed, failed.error) == (False, "the execution failed")


def test_a_run_passes_at_its_threshold_and_sums_its_cases() -> None:
    half = [("a", True, 1.0), ("b", False, 0.5)]

    assert finished(_run(half, threshold=0.5)).status is EvalRunStatus.PASSED
    assert finished(_run(half, threshold=0.6)).status is EvalRunStatus.FAILED
    summary = _run(half).model_dump()
    assert (summary["passed_cases"], summary["pass_rate"], summary["mean_score"]) == (1, 0.5, 0.75)


def test_against_a_baseline_a_case_that_now_fails_regressed_and_one_that_now_passes_improved() -> None:
    before = _run([("a", True, 1.0), ("b", False, 0.5), ("c", True, 1.0)])
    now = _run([("a", False, 0.5), ("b", True, 1.0), ("c", True, 1.0), ("d", True, 1.0)])

    comparison = compare(now.cases, before)

    assert [(c.case, c.passed_before, c.passed_now) for c in comparison.regressed] == [("a", True, False)]
    assert [(c.case, c.score_before, c.score_now) for c in comparison.improved] == [("b", 0.5, 1.0)]
    assert comparison.new_cases == ["d"]
    assert finished(now, before).comparison == comparison


def test_validate_checks_the_eval_files_beside_the_agents(tmp_path: Path) -> None:
    agents, evals = tmp_path / "agents", tmp_path / "evals"
    agents.mkdir()
    evals.mkdir()
    (agents / "echoer.yml").write_text(
        "name: echoer\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"
    )
    (evals / "good.yml").write_text("agent: echoer\ncases: [{name: a, expect: [{contains: a}]}]\n")
    (evals / "typo.yml").write_text("agent: echoer\ncases: [{name: a, expects: []}]\n")
    (evals / "nobody.yml").write_text("agent: ghost\ncases: [{name: a}]\n")
    (evals / "unjudged.yml").write_text("agent: echoer\njudge: {agent: echoer, rubric: ok?}\ncases: [{name: a}]\n")

    result = CliRunner().invoke(app, ["validate", str(agents)])

    assert result.exit_code == 1
    assert "1 eval suites valid, 3 invalid" in result.output
    assert "typo.yml" in result.output
    assert "cases.0.expects" in result.output
    assert "agent 'ghost' is not among the agent files" in result.output
    assert "judge agent 'echoer' needs an output_schema" in result.output
