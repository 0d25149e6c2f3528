"""State role (8001): agents' session memory, execution audit records, usage totals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Response
from pydantic import BaseModel, Field

from agentrunner.api.edge import EdgeConfig, role_app
from agentrunner.domain.errors import PayloadTooLargeError
from agentrunner.domain.execution import Execution
from agentrunner.domain.state import AgentState, UsageTotals
from agentrunner.ports import StateStore
from agentrunner.runtime.budgets import Budget
from agentrunner.runtime.conversation import DEFAULT_MAX_HISTORY_BYTES, history_size

AgentName = Annotated[str, Path(max_length=128)]
SessionId = Annotated[str, Path(max_length=256)]


class StateWrite(BaseModel):
    """Body of `PUT /state/{agent}/{session}`."""

    history: list[dict[str, Any]] = Field(default_factory=list, description="Conversation history, oldest first.")
    memory: dict[str, Any] = Field(default_factory=dict, description="Free-form memory of the agent for this session.")
    version: int | None = Field(
        default=None,
        ge=0,
        description="The version you read (0 when creating). A newer stored version answers 409; "
        "leave it out to overwrite unconditionally.",
    )


def _utc(moment: datetime | None) -> datetime | None:
    # A timestamp without a zone is read as UTC, the only zone agentrunner stores.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class UsageView(UsageTotals):
    """`GET /usage`: usage per agent and overall, and each budgeted agent's spend in its
    current period against `limits.budget_usd`."""

    budgets: list[Budget] = Field(default_factory=list)


BudgetsOf = Callable[[str | None], Awaitable[list[Budget]]]


def state_app(
    store: StateStore,
    edge: EdgeConfig,
    budgets: BudgetsOf | None = None,
    *,
    max_history_bytes: int = DEFAULT_MAX_HISTORY_BYTES,
) -> FastAPI:
    """The state manager's HTTP API; a history written is at most `max_history_bytes` as JSON."""
    app = role_app("state", "agentrunner state", edge)

    @app.get("/state/{agent}/{session_id}", response_model=AgentState, tags=["state"])
    async def get_state(agent: AgentName, session_id: SessionId) -> AgentState:
        return await store.load_state(agent, session_id)

    @app.put("/state/{agent}/{session_id}", response_model=AgentState, tags=["state"])
    async def put_state(agent: AgentName, session_id: SessionId, body: StateWrite) -> AgentState:
        size = history_size(body.history)
        if size > max_history_bytes:
            raise PayloadTooLargeError(
                f"history is {size} bytes as JSON, over the limit of {max_history_bytes} bytes (MAX_HISTORY_BYTES): "
                "drop its oldest messages"
            )
        state = AgentState(agent=agent, session_id=session_id, history=body.history, memory=body.memory)
        return await store.save_state(state, expected_version=body.version)

    @app.delete("/state/{agent}/{session_id}", status_code=204, tags=["state"])
    async def delete_state(agent: AgentName, session_id: SessionId) -> Response:
        await store.delete_state(agent, session_id)
        return Response(status_code=204)

    @app.get("/executions/{execution_id}", response_model=Execution, tags=["executions"], summary="Audit record")
    async def get_execution(execution_id: str) -> Execution:
        return await store.get_execution(execution_id)

    @app.get("/usage", response_model=UsageView, tags=["usage"], summary="Tokens and cost per agent, and budgets")
    async def usage(
        agent: str | None = None,
        since: Annotated[datetime | None, Query(description="ISO 8601; without a zone, UTC.")] = None,
        until: Annotated[datetime | None, Query(description="ISO 8601, exclusive; without a zone, UTC.")] = None,
    ) -> UsageView:
        totals = await store.usage(agent=agent, since=_utc(since), until=_utc(until))
        return UsageView(**totals.model_dump(), budgets=await budgets(agent) if budgets else [])

    return app
