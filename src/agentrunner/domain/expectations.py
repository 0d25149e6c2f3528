"""Expectations: what an execution's recorded facts must be, as pure checks.

An expectation is one rule (`contains: refund`, `tool_called: search`, `max_cost_usd: 0.01`,
...) over the facts an execution records: its output (text and parsed JSON), its tool calls,
its cost and latency (`RunFacts`, built from an `Execution` by `facts_of`). Evaluations
(`evals/<name>.yml`, domain/eval_suite.py) check a case's execution against them; an agent's
online `checks` are the same list of the same model, checked the same way (`check_all`).

Patterns are hostile input (an eval file or an agent file may come from a caller), so a
`regex` is compiled by RE2 (google-re2): it matches in time linear in the text, whatever
the pattern, so no pattern can hang a worker and no timeout is needed. Python's `re` (and
the `regex` library, whose timeout only bounds the damage after it has started) backtrack.
RE2 refuses backreferences and lookarounds; such a pattern is refused when the file loads,
with RE2's reason. The pattern's length, its compiled size and the text it runs on are
bounded too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import re2  # type: ignore[import-untyped]  # google-re2 ships no types
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentrunner.domain.execution import Execution
from agentrunner.domain.structured_output import check_answer, schema_problem

MAX_PATTERN_CHARS = 1_000
# RE2's memory for one compiled pattern: a pattern past it is refused, not run slowly.
MAX_PATTERN_MEMORY = 1 << 20
# The text a regex, `contains` or `equals` runs on: an output past it fails the check.
MAX_CHECKED_CHARS = 1_000_000
MAX_TEXT_CHARS = 10_000  # a `contains` or `equals` string
MAX_TOOL_NAME_CHARS = 128
MAX_DETAIL_CHARS = 300

Kind = Literal[
    "equals",
    "contains",
    "regex",
    "json_schema",
    "json_subset",
    "tool_called",
    "tool_not_called",
    "tool_called_with",
    "max_cost_usd",
    "max_latency_ms",
]
KINDS: tuple[Kind, ...] = Kind.__args__  # type: ignore[attr-defined]


class RegexRefusedError(ValueError):
    """A pattern RE2 cannot (or will not, over its bounds) compile."""


def _options() -> Any:
    options = re2.Options()
    options.max_mem = MAX_PATTERN_MEMORY
    options.log_errors = False  # the error is raised to the caller; RE2 would print it too
    return options


@lru_cache(maxsize=256)
def compiled(pattern: str) -> Any:
    """`pattern` compiled by RE2 (cached: the same checks run on every case); raise
    `RegexRefusedError` for one over `MAX_PATTERN_CHARS` or that RE2 refuses."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise RegexRefusedError(f"a regex of {len(pattern)} characters is over the limit of {MAX_PATTERN_CHARS}")
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise RegexRefusedError(
            f"regex {pattern[:80]!r} refused: {reason} (RE2 syntax: no backreferences or lookarounds)"
        ) from exc


class ToolCallExpectation(BaseModel):
    """`tool_called_with`: a call of `name` whose arguments include `arguments` (a subset)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_TOOL_NAME_CHARS)
    arguments: dict[str, Any] = Field(default_factory=dict)


class Expectation(BaseModel):
    """One rule over an execution's facts: exactly one of its fields is set, written in YAML
    as a one-key mapping (`- contains: refund`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A string compares with the output text (surrounding blanks ignored); any other JSON
    # value with the parsed output.
    equals: Any = None
    contains: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_CHARS)
    regex: str | None = Field(default=None, min_length=1, max_length=MAX_PATTERN_CHARS)
    json_schema: dict[str, Any] | None = None
    json_subset: Any = None
    tool_called: str | None = Field(default=None, min_length=1, max_length=MAX_TOOL_NAME_CHARS)
    tool_not_called: str | None = Field(default=None, min_length=1, max_length=MAX_TOOL_NAME_CHARS)
    tool_called_with: ToolCallExpectation | None = None
    max_cost_usd: float | None = Field(default=None, ge=0)
    max_latency_ms: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> Expectation:
        given = [name for name in KINDS if name in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(f"an expectation is exactly one of {', '.join(KINDS)}; got {', '.join(given) or 'none'}")
        return self

    @field_validator("regex")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            compiled(pattern)  # refused at load, not when the first case runs
        return pattern

    @field_validator("json_schema")
    @classmethod
    def _is_a_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        problem = schema_problem(schema) if schema is not None else None
        if problem:
            raise ValueError(problem)
        return schema

    @property
    def kind(self) -> Kind:
        """Which rule this is."""
        return next(name for name in KINDS if name in self.model_fields_set)

    @property
    def value(self) -> Any:
        """The rule's argument (the pattern, the tool name, the bound...)."""
        return getattr(self, self.kind)


@dataclass(frozen=True, slots=True)
class ToolCallFact:
    """One tool call an execution made: the tool's name and the arguments the model gave."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFacts:
    """What expectations are checked on: an execution's recorded facts."""

    status: str
    output: str | None = None
    output_json: Any = None
    tool_calls: tuple[ToolCallFact, ...] = ()
    cost_usd: float | None = None
    latency_ms: float | None = None


def facts_of(execution: Execution) -> RunFacts:
    """The facts of `execution`; its latency is from acceptance to its end (what a caller waits)."""
    latency = (execution.finished_at - execution.created_at).total_seconds() * 1000 if execution.finished_at else None
    return RunFacts(
        status=execution.status.value,
        output=execution.output,
        output_json=execution.output_json,
        tool_calls=tuple(ToolCallFact(call.name, dict(call.arguments)) for call in execution.tool_calls),
        cost_usd=execution.cost_usd,
        latency_ms=latency,
    )


@dataclass(frozen=True, slots=True)
class ExpectationResult:
    """The outcome of one expectation: which rule, whether it held, and why not."""

    kind: str
    passed: bool
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "passed": self.passed, "detail": self.detail}


def check_all(expectations: Sequence[Expectation], facts: RunFacts) -> list[ExpectationResult]:
    """Each expectation checked on `facts`, in order."""
    return [check(expectation, facts) for expectation in expectations]


def check(expectation: Expectation, facts: RunFacts) -> ExpectationResult:
    """Whether `facts` meet `expectation`, with a short reason when they do not."""
    kind = expectation.kind
    problem = _CHECKS[kind](expectation.value, facts)
    return ExpectationResult(kind, problem is None, _cut(problem or ""))


def _text(facts: RunFacts) -> tuple[str | None, str | None]:
    """The output text to check, or why there is none to check."""
    if facts.output is None:
        return None, f"no output (the execution is {facts.status})"
    if len(facts.output) > MAX_CHECKED_CHARS:
        return None, f"the output of {len(facts.output)} characters is over the {MAX_CHECKED_CHARS} checked"
    return facts.output, None


def _json(facts: RunFacts) -> tuple[Any, str | None]:
    """The parsed output: `output_json`, else the output text parsed as JSON."""
    if facts.output_json is not None:
        return facts.output_json, None
    text, missing = _text(facts)
    if text is None:
        return None, missing
    checked = check_answer(text, {})  # the empty schema: only parsed
    return (checked.value, None) if checked.valid else (None, checked.problems[0])


def _equals(expected: Any, facts: RunFacts) -> str | None:
    if isinstance(expected, str):
        text, missing = _text(facts)
        if text is None:
            return missing
        return None if text.strip() == expected.strip() else f"the output {text[:120]!r} is not {expected[:120]!r}"
    value, missing = _json(facts)
    if missing:
        return missing
    return None if value == expected else f"the output {_short(value)} is not {_short(expected)}"


def _contains(needle: str, facts: RunFacts) -> str | None:
    text, missing = _text(facts)
    if text is None:
        return missing
    return None if needle in text else f"the output does not contain {needle[:120]!r}"


def _regex(pattern: str, facts: RunFacts) -> str | None:
    text, missing = _text(facts)
    if text is None:
        return missing
    return None if compiled(pattern).search(text) else f"the output does not match {pattern[:120]!r}"


def _json_schema(schema: dict[str, Any], facts: RunFacts) -> str | None:
    value, missing = _json(facts)
    if missing:
        return missing
    checked = check_answer(json.dumps(value), schema)
    return None if checked.valid else "; ".join(checked.problems)


def _json_subset(expected: Any, facts: RunFacts) -> str | None:
    value, missing = _json(facts)
    if missing:
        return missing
    where = subset_mismatch(expected, value)
    return None if where is None else f"the output differs at {where}"


def subset_mismatch(expected: Any, actual: Any, path: str = "") -> str | None:
    """Where `actual` does not hold `expected` (None when it does): a mapping's keys are a
    subset, each value recursively; a list is the same length, item by item; else equal."""
    here = path or "(top)"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{here}: expected an object, got {_short(actual)}"
        for key, wanted in expected.items():
            if key not in actual:
                return f"{path}/{key}: missing"
            found = subset_mismatch(wanted, actual[key], f"{path}/{key}")
            if found:
                return found
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{here}: expected a list of {len(expected)}, got {_short(actual)}"
        for index, (wanted, got) in enumerate(zip(expected, actual, strict=True)):
            found = subset_mismatch(wanted, got, f"{path}/{index}")
            if found:
                return found
        return None
    if _number(expected) and _number(actual):  # JSON has one number type: 2 and 2.0 are equal
        return None if expected == actual else f"{here}: {_short(actual)}"
    return None if expected == actual and type(expected) is type(actual) else f"{here}: {_short(actual)}"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tool_called(name: str, facts: RunFacts) -> str | None:
    if any(call.name == name for call in facts.tool_calls):
        return None
    return f"{name!r} was not called (called: {_called(facts)})"


def _tool_not_called(name: str, facts: RunFacts) -> str | None:
    count = sum(call.name == name for call in facts.tool_calls)
    return None if count == 0 else f"{name!r} was called {count} time(s)"


def _tool_called_with(expected: ToolCallExpectation, facts: RunFacts) -> str | None:
    calls = [call for call in facts.tool_calls if call.name == expected.name]
    if not calls:
        return f"{expected.name!r} was not called (called: {_called(facts)})"
    if any(subset_mismatch(expected.arguments, call.arguments) is None for call in calls):
        return None
    return f"no call of {expected.name!r} had the arguments {_short(expected.arguments)}"


def _max_cost(bound: float, facts: RunFacts) -> str | None:
    if facts.cost_usd is None:
        return "the cost is unknown (the model has no price: give the agent `llm_config.pricing`)"
    return None if facts.cost_usd <= bound else f"cost ${facts.cost_usd:.6f} is over ${bound:.6f}"


def _max_latency(bound: float, facts: RunFacts) -> str | None:
    if facts.latency_ms is None:
        return f"no latency (the execution is {facts.status})"
    return None if facts.latency_ms <= bound else f"latency {facts.latency_ms:.0f} ms is over {bound:.0f} ms"


_CHECKS: dict[str, Any] = {
    "equals": _equals,
    "contains": _contains,
    "regex": _regex,
    "json_schema": _json_schema,
    "json_subset": _json_subset,
    "tool_called": _tool_called,
    "tool_not_called": _tool_not_called,
    "tool_called_with": _tool_called_with,
    "max_cost_usd": _max_cost,
    "max_latency_ms": _max_latency,
}


def _called(facts: RunFacts) -> str:
    return ", ".join(sorted({call.name for call in facts.tool_calls})) or "none"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _cut(detail: str) -> str:
    return detail if len(detail) <= MAX_DETAIL_CHARS else detail[: MAX_DETAIL_CHARS - 3] + "..."
