"""What `agentrunner eval` writes (cli/eval_reports.py), and the eval-file parser under any
input: the JUnit XML always parses, whatever a model put in a reason, and a document is
either a suite or an `EvalFileError`, never another exception."""

from __future__ import annotations

import contextlib
from typing import Any
from xml.etree import ElementTree

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrunner.cli.eval_reports import junit_xml, why_failed
from agentrunner.domain.eval_suite import EvalFileError, EvalSuite, parse_eval_document


def _case(name: str, *, passed: bool, status: str = "succeeded", **fields: Any) -> dict[str, Any]:
    return {"case": name, "passed": passed, "score": 1.0 if passed else 0.0, "status": status, **fields}


RUN = {
    "suite": "triage",
    "run_id": "r1",
    "agent": "triage",
    "agent_version": 2,
    "total_cases": 4,
    "created_at": "2026-12-07T06:00:00Z",
    "cases": [
        _case("ok", passed=True, latency_ms=1500),
        _case("rule", passed=False, expectations=[{"kind": "contains", "passed": False, "detail": "no 'x'"}]),
        _case("judged", passed=False, judge={"agent": "grader", "score": 0.1, "reason": "bad \x00\x1b <&> ]]> \ud800"}),
        _case("refused", passed=False, status="refused", error="agent 'triage' is unavailable"),
    ],
}


def test_junit_counts_failures_and_errors_and_survives_any_reason() -> None:
    root = ElementTree.fromstring(junit_xml([RUN]).encode())  # a model's control characters included
    [suite] = root.findall("testsuite")
    cases = {case.get("name"): case for case in suite.findall("testcase")}

    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("4", "2", "1")
    assert cases["ok"].get("time") == "1.500"
    assert cases["ok"].find("failure") is None
    assert cases["rule"].find("failure").get("message") == "contains: no 'x'"  # type: ignore[union-attr]
    assert cases["judged"].find("failure").text == "judge grader scored 0.1: bad \ufffd\ufffd <&> ]]> \ufffd"  # type: ignore[union-attr]
    assert cases["refused"].find("error").get("message") == "agent 'triage' is unavailable"  # type: ignore[union-attr]


def test_a_run_that_ended_before_every_case_counts_the_missing_ones_as_errors() -> None:
    root = ElementTree.fromstring(junit_xml([{**RUN, "total_cases": 6}]).encode())

    assert root.get("errors") == "3"


def test_why_a_case_failed_is_its_error_then_a_rule_then_its_judge() -> None:
    assert why_failed(_case("a", passed=False, error="boom", judge={"agent": "g", "score": 0})) == "boom"
    assert why_failed(_case("a", passed=False, judge={"agent": "g", "error": "no score"})) == "judge g: no score"


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
keys = st.sampled_from(["agent", "cases", "threshold", "judge", "description", "name", "expect", "other"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, yaml_values, max_size=5))
def test_any_document_is_a_suite_or_an_eval_file_error(document: dict[str, Any]) -> None:
    text = yaml.safe_dump(document)
    parsed: EvalSuite | EvalFileError
    try:
        parsed = parse_eval_document(text, "evals/any.yml", "any")
    except EvalFileError as refused:
        parsed = refused

    assert isinstance(parsed, EvalSuite) or parsed.issues


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_suite_or_an_eval_file_error(text: str) -> None:
    with contextlib.suppress(EvalFileError):  # anything else fails the test
        parse_eval_document(text, "evals/any.yml", "any")
