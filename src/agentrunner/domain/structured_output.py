"""Structured output: an agent's `output_schema`, and what an answer must be to follow it.

The answer is JSON text; it is parsed and validated here (pure: no I/O), and the problems
found are what the model reads when it is asked again (`output_retries`). How each vendor is
asked for it is in domain/llm.py (`LLMRequest.response_schema`, the forced answer tool).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

# What the model and the execution's error show of the problems: the first few, each cut.
MAX_PROBLEMS = 5
MAX_PROBLEM_CHARS = 300
# An answer longer than this is not parsed (a model stuck in a loop, not an answer).
MAX_ANSWER_CHARS = 1_000_000


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why `schema` is not a valid JSON Schema (for the draft it names, else the latest), or None."""
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.path) or "(top)"
        return f"not a valid JSON Schema at {where}: {exc.message}"
    return None


@dataclass(frozen=True, slots=True)
class CheckedAnswer:
    """An answer checked against a schema: its parsed value, or the problems found."""

    value: Any = None
    problems: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        """Whether the answer follows the schema."""
        return not self.problems


def check_answer(text: str, schema: dict[str, Any]) -> CheckedAnswer:
    """Parse `text` as JSON (a Markdown code fence around it is tolerated) and validate it
    against `schema`; the problems say where and what, for the model to fix."""
    if len(text) > MAX_ANSWER_CHARS:
        return CheckedAnswer(problems=(f"the answer is {len(text)} characters, over {MAX_ANSWER_CHARS}",))
    try:
        value = json.loads(_unfenced(text))
    except ValueError as exc:
        return CheckedAnswer(problems=(_cut(f"the answer is not JSON: {exc}"),))
    problems = value_problems(value, schema)
    return CheckedAnswer(problems=problems) if problems else CheckedAnswer(value=value)


def value_problems(value: Any, schema: dict[str, Any]) -> tuple[str, ...]:
    """Where and how `value` does not follow `schema` (a valid JSON Schema): the first
    MAX_PROBLEMS, each cut to MAX_PROBLEM_CHARS; empty when it follows it."""
    validator = validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(value), key=lambda error: [str(part) for part in error.path])
    problems = [_cut(f"{'/'.join(str(p) for p in error.path) or '(top)'}: {error.message}") for error in errors]
    if len(problems) > MAX_PROBLEMS:
        problems = [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more"]
    return tuple(problems)


def retry_prompt(problems: tuple[str, ...]) -> str:
    """What the model reads after an answer that does not follow the schema."""
    listed = "\n".join(f"- {problem}" for problem in problems)
    return (
        "Your answer does not follow the required JSON schema:\n"
        f"{listed}\n"
        "Answer again with only the corrected JSON value."
    )


def instructions(schema: dict[str, Any]) -> str:
    """The system instruction for a provider with no structured output of its own."""
    return "Answer with only a JSON value (no prose, no code fence) that follows this JSON schema:\n" + json.dumps(
        schema, sort_keys=True
    )


def _unfenced(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and "\n" in stripped:
        return stripped[stripped.index("\n") + 1 : -3]
    return stripped


def _cut(problem: str) -> str:
    return problem if len(problem) <= MAX_PROBLEM_CHARS else problem[: MAX_PROBLEM_CHARS - 3] + "..."
