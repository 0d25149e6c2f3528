"""Plan runs of collaborative agents, on the orchestrator (8003): read them, approve or
reject a plan held for approval, answer a step's question. Mounted into the orchestrator
app by the composition root."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from agentrunner.api.limits import InputLimits, pending_call_preview
from agentrunner.api.models import PlanRunList, PlanRunView
from agentrunner.domain.agent import ExecutionMode
from agentrunner.domain.audit import AuditAction
from agentrunner.domain.errors import PlanRunNotFoundError
from agentrunner.domain.execution import Execution
from agentrunner.domain.plan import ClarificationStatus, PlanRun, PlanRunStatus
from agentrunner.runtime.audit import Auditor
from agentrunner.runtime.plan_runs import PlanRuns


class ApproveRequest(BaseModel):
    """Body of `POST /plan-runs/{id}/approve` (optional)."""

    plan: dict[str, Any] | None = Field(
        default=None,
        description='An edited plan, `{"steps": [...]}`, checked as a planned one; omit to run the plan as it is.',
    )


class RejectRequest(BaseModel):
    """Body of `POST /plan-runs/{id}/reject` (optional)."""

    reason: str | None = Field(default=None, max_length=2000)


class AnswerRequest(BaseModel):
    """Body of `POST /plan-runs/{id}/clarifications/{clarification_id}`."""

    response: str = Field(min_length=1, max_length=20_000, description="The answer: text, an option, or yes/no.")
    answered_by: str | None = Field(default=None, max_length=256)


async def plan_run_view(plan_runs: PlanRuns, run: PlanRun) -> PlanRunView:
    """`run` with the tool calls its steps wait on, each call's arguments cut to a preview
    (the whole call is on the step's execution)."""
    limit = InputLimits().preview_bytes
    waiting = []
    for step in await plan_runs.waiting_steps(run):
        shown, _ = pending_call_preview(step.pending_tool_call, limit)
        waiting.append(step.model_copy(update={"pending_tool_call": shown}))
    return PlanRunView(**run.model_dump(), waiting_steps=waiting)


async def plan_run_answer(plan_runs: PlanRuns, execution: Execution) -> dict[str, Any]:
    """What an invocation of a collaborative agent answers besides its execution (ARCHITECTURE
    §9): `plan_run_id`, and as the run stands, `plan_run_status`, `steps`, the pending
    `clarifications` and the `waiting_steps` (absent until the collaborative pool has
    started the run)."""
    agent = plan_runs.registry.agents.get(execution.agent)
    if agent is None or agent.config is None or agent.config.execution_mode is not ExecutionMode.COLLABORATIVE:
        return {}
    answer: dict[str, Any] = {"plan_run_id": execution.execution_id}
    try:
        run = await plan_runs.get(execution.execution_id)
    except PlanRunNotFoundError:
        return answer
    pending = [c for c in run.clarifications if c.status is ClarificationStatus.PENDING]
    view = await plan_run_view(plan_runs, run)
    return answer | {
        "plan_run_status": run.status.value,
        "steps": [step.model_dump(mode="json") for step in run.steps],
        "clarifications": [question.model_dump(mode="json") for question in pending],
        "waiting_steps": [step.model_dump(mode="json") for step in view.waiting_steps],
    }


def plan_run_routes(plan_runs: PlanRuns, audit: Auditor | None = None) -> APIRouter:
    """The plan-run routes (ARCHITECTURE §9), to include in the orchestrator app; approvals
    and rejections are recorded in `audit`."""
    router = APIRouter(tags=["plan runs"])
    auditor = audit or Auditor(None)

    @router.get("/plan-runs", response_model=PlanRunList)
    async def list_plan_runs(
        agent: str | None = None,
        status: PlanRunStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> PlanRunList:
        return PlanRunList(items=await plan_runs.list(agent=agent, status=status, limit=limit))

    @router.get(
        "/plan-runs/{run_id}",
        response_model=PlanRunView,
        summary="A plan run: its plan, every step's status, output, usage and cost, its questions, "
        "and the tool calls its steps wait on",
    )
    async def get_plan_run(run_id: str) -> PlanRunView:
        return await plan_run_view(plan_runs, await plan_runs.get(run_id))

    @router.post("/plan-runs/{run_id}/approve", response_model=PlanRun)
    async def approve_plan_run(run_id: str, request: ApproveRequest | None = None) -> PlanRun:
        edited = request is not None and request.plan is not None
        run = await plan_runs.approve(run_id, request.plan if request else None)
        await auditor.record(AuditAction.PLAN_RUN_APPROVE, run_id, agent=run.agent, owner=run.tenant, edited=edited)
        return run

    @router.post("/plan-runs/{run_id}/reject", response_model=PlanRun)
    async def reject_plan_run(run_id: str, request: RejectRequest | None = None) -> PlanRun:
        run = await plan_runs.reject(run_id, request.reason if request else None)
        await auditor.record(AuditAction.PLAN_RUN_REJECT, run_id, agent=run.agent, owner=run.tenant)
        return run

    @router.post("/plan-runs/{run_id}/clarifications/{clarification_id}", response_model=PlanRun)
    async def answer_clarification(run_id: str, clarification_id: str, request: AnswerRequest) -> PlanRun:
        return await plan_runs.answer(run_id, clarification_id, request.response, answered_by=request.answered_by)

    return router
