"""A collaborative run's execution carries the coordinator's own spend: each step's
execution carries its own, so a tenant's or an agent's spend counts every call once."""

from __future__ import annotations

from agentrunner.domain.execution import Usage
from agentrunner.domain.plan import PlanRun, StepRun, StepStatus
from agentrunner.runtime.plan_runs import _own_spend


def _step(step_id: str, tokens: int, cost: float | None) -> StepRun:
    usage = Usage(input_tokens=tokens, output_tokens=tokens)
    return StepRun(step_id=step_id, agent="a", status=StepStatus.SUCCEEDED, usage=usage, cost_usd=cost)


def test_the_runs_execution_carries_the_run_minus_its_steps() -> None:
    run = PlanRun(
        id="r",
        agent="team",
        trace_id="t",
        usage=Usage(input_tokens=100, output_tokens=50),
        cost_usd=1.0,
        steps=[_step("one", 20, 0.25), _step("two", 10, None)],
    )
    own = _own_spend(run)
    assert own["usage"] == Usage(input_tokens=70, output_tokens=20)
    assert own["cost_usd"] == 0.75


def test_a_run_without_a_known_cost_keeps_none() -> None:
    assert _own_spend(PlanRun(id="r", agent="team", trace_id="t"))["cost_usd"] is None
