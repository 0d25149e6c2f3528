"""The agent registry table in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, delete, insert, select

from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.tables import AgentRow
from agentrunner.domain.execution import utcnow
from agentrunner.ports.state import AgentRecord

AGENTS = cast("Table", AgentRow.__table__)


class AgentsSQL(SQLEngine):
    """`AgentRecords` over the shared engine."""

    async def sync_agents(self, agents: Sequence[AgentRecord]) -> None:
        now = utcnow()
        async with self._session(write=True, atomic=True) as session:
            await session.execute(delete(AGENTS))
            if agents:
                rows = [
                    {
                        "name": agent.name,
                        "source": agent.source,
                        "status": agent.status,
                        "reasons": list(agent.reasons),
                        "config": agent.config,
                        "updated_at": now,
                    }
                    for agent in agents
                ]
                await session.execute(insert(AGENTS), rows)

    @idempotent
    async def list_agents(self) -> list[AgentRecord]:
        async with self._session() as session:
            rows = (await session.execute(select(AGENTS).order_by(AGENTS.c.name))).all()
        return [AgentRecord(r.name, r.source, r.status, list(r.reasons), r.config) for r in rows]
