"""The error tree drawn in `domain/errors.py`'s docstring is the real one: every subclass of
`AgentRunnerError` in `domain/` is drawn, under its real parent (the drawing missed four)."""

from __future__ import annotations

import re

import agentrunner.domain.agent_document
import agentrunner.domain.egress
import agentrunner.domain.eval_suite
from agentrunner.domain import errors
from agentrunner.domain.errors import AgentRunnerError

# The modules of `domain/` that define errors (a new one is added here).
DOMAIN_ERROR_MODULES = (
    errors,
    agentrunner.domain.agent_document,
    agentrunner.domain.egress,
    agentrunner.domain.eval_suite,
)

_DRAWN = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z]\w*Error)\b")


def _drawn_parents() -> dict[str, str | None]:
    """Each class drawn in the docstring, with the class it is drawn under."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name), the current branch
    for line in (errors.__doc__ or "").splitlines():
        found = _DRAWN.match(line.removeprefix("    "))
        if found is None:
            continue
        column = len(found["indent"])
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[found["name"]] = stack[-1][1] if stack else None
        stack.append((column, found["name"]))
    return parents


def _real_parents() -> dict[str, str | None]:
    parents: dict[str, str | None] = {AgentRunnerError.__name__: None}
    pending: list[type[AgentRunnerError]] = [AgentRunnerError]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            if sub.__module__ in {module.__name__ for module in DOMAIN_ERROR_MODULES}:
                parents[sub.__name__] = cls.__name__
                pending.append(sub)
    return parents


def test_error_tree_docstring_draws_every_domain_error_under_its_parent() -> None:
    assert _drawn_parents() == _real_parents()


def test_every_error_class_of_the_errors_module_is_drawn() -> None:
    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, AgentRunnerError) and value.__module__ == errors.__name__
    }
    assert defined - set(_drawn_parents()) == set()
