"""An evaluation suite: `evals/<name>.yml` beside the agents, the cases an agent must pass.

```yaml
agent: support-triage          # the agent evaluated
description: refunds and bugs  # optional
threshold: 0.8                 # the share of cases that must pass (default 1: all)
judge:                         # optional: every case's answer scored by an agent
  agent: grader
  rubric: Is the answer polite and correct?
  min_score: 0.7               # a case passes with a score at least this (default 0.5)
cases:
  - name: refund
    task_data: {prompt: I want my money back}
    session: s-1               # optional, for a continuous agent
    expect:                    # domain/expectations.py: one rule per item
      - contains: refund
      - tool_called: lookup_order
      - max_cost_usd: 0.01
    judge: {agent: grader, rubric: ...}  # optional: this case's own judge
```

Eval files are read with the agent files' parser (domain/agent_document.py): bounded in
size and values, anchors and aliases refused, duplicate keys refused. Unlike an agent
file, an unknown key is an error, not a warning: a misspelt `expect` would silently check
nothing.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentrunner.domain.agent import AGENT_NAME_PATTERN, AgentConfig
from agentrunner.domain.agent_document import (
    AgentFileError,
    ConfigIssue,
    _duplicate_keys,
    _issue_from,
    load_agent_yaml,
)
from agentrunner.domain.expectations import Expectation

MAX_CASES = 500
MAX_EXPECTATIONS = 50
MAX_RUBRIC_CHARS = 8_000
CASE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._:-]{0,127}$"
# A suite is named by its file (`evals/<name>.yml`): an agent's name rules, for the same reasons.
SUITE_NAME_PATTERN = AGENT_NAME_PATTERN


class EvalFileError(AgentFileError):
    """An eval file that cannot be loaded; `issues` lists every problem found."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        super().__init__(source, issues)
        self.message = "invalid eval file " + "; ".join(str(issue) for issue in issues)


class JudgeSpec(BaseModel):
    """An agent of the platform that scores an answer 0-1 with a reason. Its `output_schema`
    must ask for `{"score": number, "reason": string}` (structured output makes sure)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str = Field(pattern=AGENT_NAME_PATTERN)
    rubric: str = Field(min_length=1, max_length=MAX_RUBRIC_CHARS)
    min_score: float = Field(default=0.5, ge=0, le=1)


class EvalCase(BaseModel):
    """One task for the agent, with what its execution must be."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=CASE_NAME_PATTERN)
    task_data: dict[str, Any] = Field(default_factory=dict)
    session: str | None = Field(default=None, min_length=1, max_length=256)
    expect: list[Expectation] = Field(default_factory=list, max_length=MAX_EXPECTATIONS)
    judge: JudgeSpec | None = None


class EvalSuite(BaseModel):
    """The cases of one eval file, the agent they run on and the bar they must clear."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=SUITE_NAME_PATTERN)
    agent: str = Field(pattern=AGENT_NAME_PATTERN)
    description: str = Field(default="", max_length=2_000)
    threshold: float = Field(default=1.0, ge=0, le=1)
    judge: JudgeSpec | None = None
    cases: list[EvalCase] = Field(min_length=1, max_length=MAX_CASES)

    @model_validator(mode="after")
    def _cases_named_once(self) -> EvalSuite:
        seen: set[str] = set()
        for case in self.cases:
            if case.name in seen:
                raise ValueError(f"two cases are named {case.name!r}: a case's name is how runs are compared")
            seen.add(case.name)
        return self

    def judge_of(self, case: EvalCase) -> JudgeSpec | None:
        """The judge of `case`: its own, else the suite's."""
        return case.judge or self.judge

    @property
    def judges(self) -> set[str]:
        """The agents that judge some case."""
        return {judge.agent for case in self.cases if (judge := self.judge_of(case)) is not None}


# What a judge is asked for: its agent's output_schema must hold these.
JUDGE_FIELDS = ("score", "reason")


def judge_problem(config: AgentConfig) -> str | None:
    """Why `config` cannot judge (its output_schema does not ask for a score and a reason), or None."""
    schema = config.output_schema
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(properties, dict) and all(field in properties for field in JUDGE_FIELDS):
        return None
    return (
        f"judge agent {config.name!r} needs an output_schema with the properties "
        f"{' and '.join(JUDGE_FIELDS)} (a number 0-1 and a string): its answer is the verdict"
    )


def parse_eval_document(text: str, source: str, name: str) -> EvalSuite:
    """Parse and validate the eval file `source` (suite `name`); raise `EvalFileError`
    listing every problem (too big, an anchor or alias, a YAML syntax error, a duplicate
    or unknown key, a wrong value, a regex RE2 refuses). CPU-bound: run it in a thread."""
    try:
        node, data = load_agent_yaml(text, source)
    except AgentFileError as exc:  # too big, an alias, not YAML: said as the agent files' parser says it
        raise EvalFileError(source, list(exc.issues)) from exc
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        issue = ConfigIssue(
            source, "", f"expected a mapping with `agent` and `cases` at the top level, found {kind}", 1
        )
        raise EvalFileError(source, [issue])
    duplicates = _duplicate_keys(node, source)
    if duplicates:
        raise EvalFileError(source, duplicates)
    if "name" in data:
        issue = ConfigIssue(source, "name", f"a suite is named by its file ({name}.yml): remove `name`")
        raise EvalFileError(source, [issue])
    try:
        return EvalSuite.model_validate({**data, "name": name})
    except ValidationError as exc:
        raise EvalFileError(source, [_issue_from(error, source, node) for error in exc.errors()]) from exc
