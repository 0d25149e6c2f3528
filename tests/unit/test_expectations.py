"""Expectations (domain/expectations.py): each rule over an execution's recorded facts, and
hostile patterns refused or matched in linear time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from agentrunner.domain.execution import Execution, ExecutionStatus, ToolCallRecord, utcnow
from agentrunner.domain.expectations import (
    MAX_CHECKED_CHARS,
    MAX_PATTERN_CHARS,
    Expectation,
    RunFacts,
    ToolCallFact,
    check,
    facts_of,
    subset_mismatch,
)

FACTS = RunFacts(
    status="succeeded",
    output='{"category": "refund", "priority": 2, "tags": ["billing", "urgent"]}',
    tool_calls=(
        ToolCallFact("lookup_order", {"order_id": "A-1", "verbose": True}),
        ToolCallFact("search", {"query": "refund policy"}),
    ),
    cost_usd=0.002,
    latency_ms=850.0,
)


def _check(rule: dict[str, Any], facts: RunFacts = FACTS) -> tuple[bool, str]:
    result = check(Expectation.model_validate(rule), facts)
    assert result.kind == next(iter(rule))
    return result.passed, result.detail


@pytest.mark.parametrize(
    ("rule", "passed"),
    [
        ({"contains": "refund"}, True),
        ({"contains": "chargeback"}, False),
        ({"regex": r'"priority":\s*\d'}, True),
        ({"regex": r"^refund"}, False),
        ({"equals": {"category": "refund", "priority": 2, "tags": ["billing", "urgent"]}}, True),
        ({"equals": {"category": "refund"}}, False),
        ({"equals": '  {"category": "refund", "priority": 2, "tags": ["billing", "urgent"]}\n'}, True),
        ({"equals": "refund"}, False),
        ({"json_subset": {"category": "refund", "tags": ["billing", "urgent"]}}, True),
        ({"json_subset": {"category": "refund", "tags": ["billing"]}}, False),
        ({"json_subset": {"priority": "2"}}, False),
        ({"json_subset": {"priority": 2.0}}, True),  # JSON has one number type
        ({"json_subset": {"priority": True}}, False),  # but a boolean is not a number
        ({"json_schema": {"type": "object", "required": ["category"]}}, True),
        ({"json_schema": {"type": "object", "required": ["owner"]}}, False),
        ({"tool_called": "search"}, True),
        ({"tool_called": "delete_order"}, False),
        ({"tool_not_called": "delete_order"}, True),
        ({"tool_not_called": "search"}, False),
        ({"tool_called_with": {"name": "lookup_order", "arguments": {"order_id": "A-1"}}}, True),
        ({"tool_called_with": {"name": "lookup_order", "arguments": {"order_id": "B-2"}}}, False),
        ({"tool_called_with": {"name": "refund", "arguments": {}}}, False),
        ({"max_cost_usd": 0.01}, True),
        ({"max_cost_usd": 0.001}, False),
        ({"max_latency_ms": 1000}, True),
        ({"max_latency_ms": 500}, False),
    ],
)
def test_each_expectation_holds_or_says_why_not(rule: dict[str, Any], passed: bool) -> None:
    held, detail = _check(rule)

    assert held is passed
    assert (detail == "") is passed


def test_a_failed_execution_fails_what_needs_its_output_with_its_status() -> None:
    failed = RunFacts(status="failed")

    assert _check({"contains": "x"}, failed) == (False, "no output (the execution is failed)")
    assert _check({"json_subset": {"a": 1}}, failed)[0] is False
    assert _check({"tool_not_called": "search"}, failed) == (True, "")


def test_an_unknown_cost_fails_a_cost_bound_rather_than_passing_it() -> None:
    held, detail = _check({"max_cost_usd": 1.0}, RunFacts(status="succeeded", output="x"))

    assert not held
    assert "cost is unknown" in detail


def test_the_parsed_output_is_preferred_to_the_text() -> None:
    facts = RunFacts(status="succeeded", output="not json", output_json={"a": [1, 2]})

    assert _check({"json_subset": {"a": [1, 2]}}, facts) == (True, "")
    assert _check({"equals": {"a": [1, 2]}}, facts) == (True, "")


def test_output_that_is_not_json_fails_json_rules_with_the_parse_error() -> None:
    held, detail = _check({"json_subset": {"a": 1}}, RunFacts(status="succeeded", output="plain words"))

    assert not held
    assert "not JSON" in detail


def test_facts_of_an_execution_are_its_output_calls_cost_and_latency() -> None:
    created = utcnow()
    call = ToolCallRecord(
        call_id="c1",
        name="search",
        arguments={"q": "x"},
        started_at=created,
        finished_at=created,
        duration_ms=1.0,
    )
    execution = Execution(
        execution_id="e1",
        agent="a",
        status=ExecutionStatus.SUCCEEDED,
        output="ok",
        cost_usd=0.5,
        tool_calls=[call],
        trace_id="t",
        created_at=created,
        finished_at=created + timedelta(milliseconds=250),
    )

    facts = facts_of(execution)

    assert facts == RunFacts(
        status="succeeded",
        output="ok",
        tool_calls=(ToolCallFact("search", {"q": "x"}),),
        cost_usd=0.5,
        latency_ms=250.0,
    )


@pytest.mark.parametrize(
    "rule",
    [
        {},
        {"contains": "a", "regex": "b"},
        {"contians": "typo"},
        {"max_cost_usd": -1},
        {"max_latency_ms": 0},
        {"contains": ""},
        {"json_schema": {"type": "no-such-type"}},
        {"tool_called_with": {"name": "x", "arguments": {}, "extra": 1}},
    ],
)
def test_a_malformed_expectation_is_refused(rule: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Expectation.model_validate(rule)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a)\1", "RE2 syntax"),  # a backreference: RE2 has none
        (r"(?=a)a", "RE2 syntax"),  # a lookahead
        ("a" * (MAX_PATTERN_CHARS + 1), "at most 1000 characters"),
        ("((((a{100}){100}){100}){100})", "refused"),  # compiles to more than its memory bound
    ],
)
def test_a_regex_re2_cannot_run_safely_is_refused_at_load(pattern: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Expectation.model_validate({"regex": pattern})


def test_a_catastrophic_backtracking_pattern_ends() -> None:
    # Python's re would backtrack for longer than the universe on this; RE2 is linear, so
    # the test ends (the per-test timeout is the bound).
    facts = RunFacts(status="succeeded", output="a" * 100_000 + "!")

    held, detail = _check({"regex": r"^(a+)+$"}, facts)

    assert (held, detail) == (False, "the output does not match '^(a+)+$'")


def test_an_output_past_the_checked_size_fails_text_rules() -> None:
    facts = RunFacts(status="succeeded", output="a" * (MAX_CHECKED_CHARS + 1))

    held, detail = _check({"regex": "a"}, facts)

    assert not held
    assert "over the" in detail


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=10,
)


@given(json_values)
def test_any_json_value_holds_itself_as_a_subset(value: Any) -> None:
    assert subset_mismatch(value, value) is None


@given(st.dictionaries(st.text(max_size=3), json_values, min_size=1, max_size=4), st.text(max_size=3), json_values)
def test_a_mapping_holds_any_of_its_own_sub_mappings(value: dict[str, Any], extra_key: str, extra: Any) -> None:
    bigger = {**value, extra_key: extra} if extra_key not in value else value
    sub = dict(list(value.items())[:1])

    assert subset_mismatch(sub, bigger) is None
