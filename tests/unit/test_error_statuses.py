"""Every error code of agentrunner answers with the status its meaning says, never a 500 by
omission: the walk covers every subclass of AgentRunnerError wherever it is defined."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import agentrunner
import agentrunner.domain.errors
from agentrunner.api.errors import STATUS_BY_CODE, error_answer
from agentrunner.domain.errors import AgentRunnerError, ExecutionTimedOutError, StepFailedError

# Codes that mean "a bug of ours": the only ones allowed to answer 500.
SERVER_ERRORS = {"internal_error"}

# Not importable as a module of the package: the entry point runs the CLI, and Alembic's env
# and revision scripts run only inside Alembic.
_NOT_IMPORTED = ("agentrunner.__main__", "agentrunner.adapters.state.migrations")


def _error_classes() -> list[type[AgentRunnerError]]:
    for module in pkgutil.walk_packages(agentrunner.__path__, prefix="agentrunner."):
        if not module.name.startswith(_NOT_IMPORTED):
            importlib.import_module(module.name)
    found: list[type[AgentRunnerError]] = [AgentRunnerError]
    for cls in found:
        found.extend(sub for sub in cls.__subclasses__() if sub not in found)
    return sorted(found, key=lambda cls: (cls.__module__, cls.__name__))


ERROR_CLASSES = _error_classes()


def test_the_walk_finds_the_tree_and_errors_defined_outside_domain_errors() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}

    assert {"ConfigError", "LLMRateLimitError", "PlanRejectedError", "EgressRefusedError", "AgentFileError"} <= names
    in_the_tree_module = {
        cls for cls in vars(agentrunner.domain.errors).values() if isinstance(cls, type) and issubclass(cls, Exception)
    }
    assert in_the_tree_module <= set(ERROR_CLASSES)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: f"{cls.__name__}:{cls.code}")
def test_every_error_code_has_an_explicit_status(cls: type[AgentRunnerError]) -> None:
    assert cls.code in STATUS_BY_CODE, f"{cls.__name__} ({cls.code}) has no status in api/errors.py STATUS_BY_CODE"
    status = STATUS_BY_CODE[cls.code]
    assert status != 500 or cls.code in SERVER_ERRORS, f"{cls.code} answers 500 but is not a server error"
    assert 400 <= status < 600


def test_only_server_errors_answer_500() -> None:
    assert {code for code, status in STATUS_BY_CODE.items() if status == 500} == SERVER_ERRORS


@pytest.mark.parametrize(
    ("error", "status"),
    [(ExecutionTimedOutError("ran past timeout_seconds (30)"), 504), (StepFailedError("step 'a' failed"), 502)],
    ids=["timed_out", "step_failed"],
)
def test_the_answer_carries_the_codes_status(error: AgentRunnerError, status: int) -> None:
    response = error_answer(error)

    assert response.status_code == status
    assert b'"code":"' + error.code.encode() + b'"' in response.body
