"""State role (8001): agents' session memory, execution audit records (with their steps),
usage totals, and the audit log of changes (admins only).

Everything is the caller's own (ARCHITECTURE §10): sessions are named within the caller's
tenant (an admin names another tenant's with `?tenant=`), an execution of another tenant
is a 404 as a missing one, and `/usage` counts the caller's executions and shows its own
budget (an admin: every tenant's, and the agents' budgets)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Response
from pydantic import BaseModel, Field

from agentrunner.api.edge import EdgeConfig, role_app
from agentrunner.api.steps import ExecutionWithSteps, with_steps
from agentrunner.domain.audit import AuditAction, AuditEntry
from agentrunner.domain.errors import ExecutionNotFoundError, PayloadTooLargeError
from agentrunner.domain.state import AgentState, UsageTotals
from agentrunner.ports.state import ExecutionQueries, ExecutionStore, SessionStore, StepJournal
from agentrunner.runtime.audit import MAX_AUDIT_PAGE, Auditor
from agentrunner.runtime.budgets import Budget
from agentrunner.runtime.conversation import DEFAULT_MAX_HISTORY_BYTES, history_size
from agentrunner.runtime.ownership import owned, session_owner
from agentrunner.tracing import visible_tenant

AgentName = Annotated[str, Path(max_length=128)]
SessionId = Annotated[str, Path(max_length=256)]
TenantName = Annotated[
    str | None, Query(max_length=64, description="Admins: the tenant whose session it is (default: your own).")
]


class StateWrite(BaseModel):
    """Body of `PUT /state/{agent}/{session}`."""

    history: list[dict[str, Any]] = Field(default_factory=list, description="Conversation history, oldest first.")
    memory: dict[str, Any] = Field(default_factory=dict, description="Free-form memory of the agent for this session.")
    version: int | None = Field(
        default=None,
        ge=0,
        le=2**63 - 1,  # what a database integer holds
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


class AuditPage(BaseModel):
    """`GET /audit`: entries newest first; `next_before` is the `before` of the next page
    (None on the last one)."""

    items: list[AuditEntry]
    next_before: int | None


def state_app(
    edge: EdgeConfig,
    budgets: BudgetsOf | None = None,
    *,
    sessions: SessionStore,
    executions: ExecutionStore,
    queries: ExecutionQueries,
    steps: StepJournal | None = None,
    max_history_bytes: int = DEFAULT_MAX_HISTORY_BYTES,
    audit: Auditor | None = None,
) -> FastAPI:
    """The state manager's HTTP API; a history written is at most `max_history_bytes` as
    JSON; state edits are recorded in `audit`, which `GET /audit` reads; an execution's
    record lists the steps of its journal (`steps`)."""
    app = role_app("state", "agentrunner state", edge)
    auditor = audit or Auditor(None)

    @app.get("/state/{agent}/{session_id}", response_model=AgentState, tags=["state"])
    async def get_state(agent: AgentName, session_id: SessionId, tenant: TenantName = None) -> AgentState:
        return await sessions.load_state(agent, session_id, tenant=session_owner(agent, session_id, tenant))

    @app.put("/state/{agent}/{session_id}", response_model=AgentState, tags=["state"])
    async def put_state(
        agent: AgentName, session_id: SessionId, body: StateWrite, tenant: TenantName = None
    ) -> AgentState:
        size = history_size(body.history)
        if size > max_history_bytes:
            raise PayloadTooLargeError(
                f"history is {size} bytes as JSON, over the limit of {max_history_bytes} bytes (MAX_HISTORY_BYTES): "
                "drop its oldest messages"
            )
        owner = session_owner(agent, session_id, tenant)
        state = AgentState(agent=agent, session_id=session_id, tenant=owner, history=body.history, memory=body.memory)
        saved = await sessions.save_state(state, expected_version=body.version)
        await auditor.record(
            AuditAction.STATE_WRITE, f"{agent}/{session_id}", owner=owner, version=saved.version, history_bytes=size
        )
        return saved

    @app.delete("/state/{agent}/{session_id}", status_code=204, tags=["state"])
    async def delete_state(agent: AgentName, session_id: SessionId, tenant: TenantName = None) -> Response:
        owner = session_owner(agent, session_id, tenant)
        await sessions.delete_state(agent, session_id, tenant=owner)
        await auditor.record(AuditAction.STATE_DELETE, f"{agent}/{session_id}", owner=owner)
        return Response(status_code=204)

    @app.get(
        "/executions/{execution_id}", response_model=ExecutionWithSteps, tags=["executions"], summary="Audit record"
    )
    async def get_execution(execution_id: str) -> ExecutionWithSteps:
        execution = await executions.get_execution(execution_id)
        missing = ExecutionNotFoundError(f"execution {execution_id} not found", execution_id=execution_id)
        execution = owned(execution, execution.tenant, lambda: missing)  # before its steps are read
        return with_steps(execution, await steps.steps(execution_id) if steps is not None else [])

    @app.get("/usage", response_model=UsageView, tags=["usage"], summary="Tokens and cost per agent, and budgets")
    async def usage(
        agent: str | None = None,
        since: Annotated[datetime | None, Query(description="ISO 8601; without a zone, UTC.")] = None,
        until: Annotated[datetime | None, Query(description="ISO 8601, exclusive; without a zone, UTC.")] = None,
    ) -> UsageView:
        seen = visible_tenant()
        totals = await queries.usage(agent=agent, since=_utc(since), until=_utc(until), tenant=seen)
        shown = await budgets(agent) if budgets else []
        if seen is not None:  # a tenant: its own budget only (an agent's counts every tenant's spend)
            shown = [budget for budget in shown if budget.tenant == seen]
        return UsageView(**totals.model_dump(), budgets=shown)

    @app.get(
        "/audit",
        response_model=AuditPage,
        tags=["audit"],
        summary="Who changed what: reloads, approvals, replays, state edits (admins only)",
    )
    async def audit_log(
        before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Entries older than this id.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE, description="At most 500 entries a page.")] = 100,
    ) -> AuditPage:
        items = await auditor.entries(before=before, limit=limit)
        return AuditPage(items=items, next_before=items[-1].id if len(items) == limit else None)

    return app
