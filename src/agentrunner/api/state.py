"""State role (8001): the durable records."""

from __future__ import annotations

from fastapi import FastAPI

from agentrunner.api.edge import EdgeConfig, role_app
from agentrunner.domain.execution import Execution
from agentrunner.ports import StateStore


def state_app(store: StateStore, edge: EdgeConfig) -> FastAPI:
    """The state manager's HTTP API."""
    app = role_app("state", "agentrunner state", edge)

    @app.get("/executions/{execution_id}", response_model=Execution, tags=["executions"], summary="Audit record")
    async def get_execution(execution_id: str) -> Execution:
        return await store.get_execution(execution_id)

    return app
