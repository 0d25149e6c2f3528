"""Online checks: expectations an agent's every answer must meet in production (issue 24).

```yaml
checks:                        # the expectations of eval cases (domain/expectations.py)
  - contains: order
  - name: no-refunds-tool      # optional: the check's label in metrics and on the execution
    tool_not_called: refund
  - max_cost_usd: 0.05
on_check_failure: flag         # flag (default): recorded, still succeeded; fail: failed (check_failed)
```

They run when an execution ends successfully, in the worker's end path, on the config of
the version the execution ran (a pinned version's checks, not the file's latest): their
result is part of the end and saved with it in the same write (runtime/run_endings.py),
so no end is recorded without its checks, and an end recorded once is counted once.

A check is an `Expectation` (parsed with the same strictness and bounds as an eval case's,
its regex compiled by RE2), with an optional `name`. Judges are refused: a judge is a
model call, and checks run on every production execution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from agentrunner.domain.errors import CheckFailedError
from agentrunner.domain.execution import Execution, ExecutionError, ExecutionStatus, FailedCheck
from agentrunner.domain.expectations import Expectation, check_all, facts_of

# As many as an eval case's expectations (domain/eval_suite.py MAX_EXPECTATIONS): they cost
# CPU on every run.
MAX_CHECKS = 50
# A check's label is a metric label: short and of a small alphabet, so the series stay few.
CHECK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,47}$"

OnCheckFailure = Literal["flag", "fail"]


class Check(Expectation):
    """One online check: an expectation (exactly one rule), optionally named."""

    name: str | None = Field(default=None, pattern=CHECK_NAME_PATTERN)

    @model_validator(mode="before")
    @classmethod
    def _no_judge(cls, data: Any) -> Any:
        if isinstance(data, dict) and "judge" in data:
            raise ValueError(
                "a judge is not allowed in online checks (a model call on every production run): "
                "judge answers in an eval suite (evals/<name>.yml) instead"
            )
        return data

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Dumped as written (its rule, its name if any): the dump of a config is what a
        # version keeps and parses again for work pinned to it, where nine rules set to
        # null would be nine rules.
        dumped: dict[str, Any] = handler(self)
        return {key: value for key, value in dumped.items() if key in self.model_fields_set}

    @property
    def label(self) -> str:
        """What it is called in metrics and on the execution: its name, else its type."""
        return self.name or self.kind


def checked(execution: Execution, checks: Sequence[Check], on_failure: OnCheckFailure) -> Execution:
    """`execution`, a run that succeeded, with the checks it failed recorded; with
    `on_failure` "fail" and some failed, it failed with `check_failed` and their reasons.
    Any other execution, or no checks: unchanged (a failed run's answer is not checked)."""
    if execution.status is not ExecutionStatus.SUCCEEDED or not checks:
        return execution
    results = check_all(checks, facts_of(execution))
    failed = [
        FailedCheck(check=check.label, kind=result.kind, detail=result.detail)
        for check, result in zip(checks, results, strict=True)
        if not result.passed
    ]
    if not failed:
        return execution
    if on_failure == "flag":
        return execution.model_copy(update={"failed_checks": failed})
    error = CheckFailedError(
        "failed its checks: " + "; ".join(f"{failure.check}: {failure.detail}" for failure in failed),
        checks=tuple(failure.check for failure in failed),
    )
    return execution.model_copy(
        update={
            "failed_checks": failed,
            "status": ExecutionStatus.FAILED,
            "error": ExecutionError(code=error.code, message=error.message),
        }
    )
