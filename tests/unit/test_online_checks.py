"""An agent file's online `checks` (domain/checks.py): parsed as strictly as an eval case's
expectations, judges refused, and what a succeeded execution becomes when some fail under
`flag` and under `fail`."""

from __future__ import annotations

import pytest

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.agent_document import AgentFileError, parse_agent_document
from agentrunner.domain.checks import Check, checked
from agentrunner.domain.execution import Execution, ExecutionError, ExecutionStatus, utcnow

AGENT = "name: triage\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"


def _load(checks: str) -> AgentConfig:
    return parse_agent_document(AGENT + checks, "agents/triage.yml").config


def _refusal(checks: str) -> str:
    with pytest.raises(AgentFileError) as raised:
        _load(checks)
    return str(raised.value)


def _answered(output: str, status: ExecutionStatus = ExecutionStatus.SUCCEEDED) -> Execution:
    return Execution(
        execution_id="e1", agent="triage", status=status, output=output, trace_id="t", finished_at=utcnow()
    )


def test_checks_parse_as_expectations_with_an_optional_name_and_flag_by_default() -> None:
    config = _load("checks:\n  - contains: order\n  - name: no-refund\n    tool_not_called: refund\n")

    assert [(check.kind, check.label) for check in config.checks] == [
        ("contains", "contains"),
        ("tool_not_called", "no-refund"),
    ]
    assert config.on_check_failure == "flag"


def test_a_config_with_checks_dumped_parses_again_as_it_was() -> None:
    # What a version keeps is the config's dump, parsed again for work pinned to it.
    config = _load("checks:\n  - name: n\n    tool_called_with: {name: t}\n  - equals: null\non_check_failure: fail\n")

    again = AgentConfig.model_validate(config.model_dump(mode="json"))

    assert again == config
    assert config.model_dump(mode="json")["checks"][1] == {"equals": None}


def test_a_judge_in_the_checks_is_refused_with_the_reason() -> None:
    refusal = _refusal("checks:\n  - judge: {agent: grader, rubric: Good?}\n")

    assert "checks.0" in refusal
    assert "a judge is not allowed in online checks" in refusal


def test_a_collaborative_agent_takes_no_checks() -> None:
    text = AGENT.replace("autonomous", "collaborative") + "checks: [{contains: a}]\n"

    with pytest.raises(AgentFileError) as raised:
        parse_agent_document(text, "agents/triage.yml")

    assert "a collaborative agent takes no checks" in str(raised.value)


@pytest.mark.parametrize(
    ("checks", "reason"),
    [
        ("checks: [{regex: '(a)\\1'}]", "RE2 syntax"),
        ("checks: [{regex: '(?=a)'}]", "RE2 syntax"),
        (f"checks: [{{regex: '{'a' * 1_001}'}}]", "at most 1000 characters"),
        ("checks: [{contains: a, regex: b}]", "exactly one of"),
        ("checks: [{contians: a}]", "Extra inputs are not permitted"),
        ("checks: [{name: 'not a label!', contains: a}]", "should match pattern"),
        ("checks: [{json_schema: {type: nope}}]", "nope"),
        ("checks: [" + ", ".join(["{contains: a}"] * 51) + "]", "at most 50 items"),
        ("on_check_failure: ignore", "'flag' or 'fail'"),
    ],
    ids=[
        "backreference",
        "lookahead",
        "long-regex",
        "two-rules",
        "misspelt",
        "bad-name",
        "bad-schema",
        "too-many",
        "mode",
    ],
)
def test_a_malformed_check_fails_the_load(checks: str, reason: str) -> None:
    assert reason in _refusal(checks + "\n")


def test_flag_records_the_failures_and_keeps_the_success() -> None:
    checks = [Check(contains="order"), Check(name="short", regex="^.{0,5}$"), Check(tool_not_called="refund")]

    flagged = checked(_answered("no such thing"), checks, "flag")

    assert flagged.status is ExecutionStatus.SUCCEEDED
    assert flagged.error is None
    assert [(failed.check, failed.kind) for failed in flagged.failed_checks] == [
        ("contains", "contains"),
        ("short", "regex"),
    ]
    assert flagged.failed_checks[0].detail == "the output does not contain 'order'"


def test_fail_ends_it_failed_with_check_failed_and_the_reasons() -> None:
    failed = checked(_answered("no such thing"), [Check(name="has-order", contains="order")], "fail")

    assert failed.status is ExecutionStatus.FAILED
    assert failed.error == ExecutionError(
        code="check_failed", message="failed its checks: has-order: the output does not contain 'order'"
    )
    assert failed.output == "no such thing"


def test_passing_checks_and_runs_that_did_not_succeed_are_left_as_they_are() -> None:
    checks = [Check(contains="order")]
    passing = _answered("order 1")
    crashed = _answered("", ExecutionStatus.FAILED)

    assert checked(passing, checks, "fail") == passing
    assert checked(crashed, checks, "fail") == crashed
    assert checked(_answered("nothing"), [], "fail").failed_checks == []
