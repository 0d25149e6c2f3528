"""Agent state per session in SQL, written under optimistic concurrency (a version per row)."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.rows import state_from, state_payload
from agentrunner.adapters.state.tables import AgentStateRow
from agentrunner.domain.errors import ConflictError, StateNotFoundError
from agentrunner.domain.execution import utcnow
from agentrunner.domain.state import AgentState

STATES = cast("Table", AgentStateRow.__table__)


class SessionsSQL(SQLEngine):
    """`SessionStore` over the shared engine."""

    @idempotent
    async def load_state(self, agent: str, session_id: str, *, tenant: str | None = None) -> AgentState:
        query = select(STATES).where(
            STATES.c.agent == agent, STATES.c.tenant == (tenant or ""), STATES.c.session_id == session_id
        )
        async with self._session() as session:
            row = (await session.execute(query)).first()
            if row is None:
                raise StateNotFoundError(f"no state for agent {agent!r} session {session_id!r}")
            return state_from(row)

    async def save_state(self, state: AgentState, *, expected_version: int | None) -> AgentState:
        key = {"agent": state.agent, "tenant": state.tenant or "", "session_id": state.session_id}
        now = utcnow()
        try:
            async with self._session(write=True, atomic=expected_version is None) as session:
                if expected_version is None:
                    stored = await session.scalar(select(STATES.c.version).where(*_state_is(state)).with_for_update())
                    expected_version = stored or 0
                if expected_version == 0:
                    await session.execute(
                        insert(STATES).values(**key, payload=state_payload(state), version=1, updated_at=now)
                    )
                else:
                    result = await session.execute(
                        update(AgentStateRow)
                        .where(*_state_is(state), AgentStateRow.version == expected_version)
                        .values(payload=state_payload(state), version=expected_version + 1, updated_at=now)
                    )
                    if result.rowcount != 1:
                        raise await self._stale(session, state, expected_version)
        except IntegrityError as exc:
            raise ConflictError(
                f"state of agent {state.agent!r} session {state.session_id!r} already exists: "
                "load it and save with the version you read",
                agent=state.agent,
                session_id=state.session_id,
            ) from exc
        return state.model_copy(update={"version": expected_version + 1, "updated_at": now})

    @staticmethod
    async def _stale(session: AsyncConnection, state: AgentState, expected: int) -> ConflictError:
        current = await session.scalar(select(AgentStateRow.version).where(*_state_is(state)))
        where = f"agent {state.agent!r} session {state.session_id!r}"
        if current is None:
            return ConflictError(f"no state stored for {where} (expected version {expected}): save with version 0")
        return ConflictError(
            f"stale write to {where}: expected version {expected}, stored version is {current}; "
            "load the state again and reapply the change",
            current_version=current,
        )

    async def delete_state(self, agent: str, session_id: str, *, tenant: str | None = None) -> None:
        async with self._session(write=True) as session:
            result = await session.execute(
                delete(AgentStateRow).where(
                    AgentStateRow.agent == agent,
                    AgentStateRow.tenant == (tenant or ""),
                    AgentStateRow.session_id == session_id,
                )
            )
            if result.rowcount != 1:
                raise StateNotFoundError(f"no state for agent {agent!r} session {session_id!r}")

    # -- outbox ----------------------------------------------------------------------


def _state_is(state: AgentState) -> tuple[Any, ...]:
    """The conditions that pick `state`'s row: its agent, tenant and session."""
    return (
        AgentStateRow.agent == state.agent,
        AgentStateRow.tenant == (state.tenant or ""),
        AgentStateRow.session_id == state.session_id,
    )
