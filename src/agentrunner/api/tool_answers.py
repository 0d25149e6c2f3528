"""Answering an execution that waits for a human before a tool call (status
`waiting_approval`, the call in `pending_tool_call`): approve or deny a gated call, say what
became of a call a crash cut short. The caller's own executions only (another tenant's
answer 404 as a missing one does); 409 when it does not wait on such a question."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, model_validator

from agentrunner.domain.errors import ExecutionNotFoundError
from agentrunner.domain.execution import Execution, utcnow
from agentrunner.domain.tool_gates import Decision, ToolCallAnswer
from agentrunner.runtime.orchestrator import Orchestrator
from agentrunner.runtime.ownership import owned

# What a human may write for the model to read: a result is a tool's result (cut to the
# agent's tool_result_max_chars like any), a reason one line or a few.
MAX_RESULT_CHARS = 100_000
MAX_REASON_CHARS = 2_000


class DenyRequest(BaseModel):
    """Body of `POST /executions/{id}/deny` (optional)."""

    model_config = ConfigDict(extra="forbid")

    reason: StrictStr | None = Field(
        default=None, max_length=MAX_REASON_CHARS, description="Why: the model reads it with the refusal."
    )


class ToolOutcomeRequest(BaseModel):
    """Body of `POST /executions/{id}/tool-outcome`: exactly one of `happened` (with the
    call's `result`, which the model reads), `again` or `fail`, set to true."""

    model_config = ConfigDict(extra="forbid")

    happened: StrictBool = Field(default=False, description="The call did happen; `result` is what it returned.")
    result: StrictStr | None = Field(
        default=None, max_length=MAX_RESULT_CHARS, description="The call's result, with `happened` (else empty)."
    )
    again: StrictBool = Field(default=False, description="Run the call again.")
    fail: StrictBool = Field(default=False, description="Fail the execution (error code tool_outcome_unknown).")

    @model_validator(mode="after")
    def _one_answer(self) -> ToolOutcomeRequest:
        if [self.happened, self.again, self.fail].count(True) != 1:
            raise ValueError(
                'answer with exactly one of {"happened": true, "result": ...}, {"again": true}, {"fail": true}'
            )
        if self.result is not None and not self.happened:
            raise ValueError("'result' goes with 'happened': true only")
        return self

    @property
    def decision(self) -> Decision:
        if self.happened:
            return Decision.HAPPENED
        return Decision.AGAIN if self.again else Decision.FAIL


def tool_answer_routes(app: FastAPI, orchestrator: Orchestrator) -> None:
    """`POST /executions/{id}/approve`, `/deny` and `/tool-outcome`: each answers 202 with
    the execution queued again (its re-run takes the answer)."""

    async def answer(execution_id: str, answer: ToolCallAnswer) -> JSONResponse:
        execution = await orchestrator.execution(execution_id)
        owned(execution, execution.tenant, lambda: _no_execution(execution_id))
        queued = await orchestrator.answer_tool_call(execution, answer)
        return JSONResponse(queued.model_dump(mode="json"), status_code=202)

    waiting = {
        202: {"model": Execution, "description": "Answered: the execution is queued again."},
        409: {"description": "It does not wait on this question (not waiting, answered already, cancelled)."},
    }

    @app.post(
        "/executions/{execution_id}/approve",
        tags=["executions"],
        status_code=202,
        responses=waiting,  # type: ignore[arg-type]
        summary="Run the tool call an execution waits to have approved",
    )
    async def approve(execution_id: str) -> JSONResponse:
        return await answer(execution_id, ToolCallAnswer(decision=Decision.APPROVE, answered_at=utcnow()))

    @app.post(
        "/executions/{execution_id}/deny",
        tags=["executions"],
        status_code=202,
        responses=waiting,  # type: ignore[arg-type]
        summary="Refuse the tool call an execution waits to have approved: the model is told",
    )
    async def deny(execution_id: str, request: DenyRequest | None = None) -> JSONResponse:
        reason = request.reason if request is not None else None
        return await answer(execution_id, ToolCallAnswer(decision=Decision.DENY, reason=reason, answered_at=utcnow()))

    @app.post(
        "/executions/{execution_id}/tool-outcome",
        tags=["executions"],
        status_code=202,
        responses=waiting,  # type: ignore[arg-type]
        summary="Say what became of a tool call a crash cut short (status waiting_approval, tool_outcome_unknown)",
    )
    async def tool_outcome(execution_id: str, request: ToolOutcomeRequest) -> JSONResponse:
        return await answer(
            execution_id, ToolCallAnswer(decision=request.decision, result=request.result, answered_at=utcnow())
        )


def _no_execution(execution_id: str) -> ExecutionNotFoundError:
    return ExecutionNotFoundError(f"execution {execution_id} not found", execution_id=execution_id)
