"""The audit log in SQL: functions that each run on one connection inside the caller's
transaction, and `AuditSQL`, the `AuditLog` methods that open those transactions on the
shared engine (`engine.py`, which translates driver errors)."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.tables import AuditRow
from agentrunner.domain.audit import AuditAction, AuditEntry
from agentrunner.domain.errors import BadRequestError

AUDIT = cast("Table", AuditRow.__table__)


async def record_audit(session: AsyncConnection, entry: AuditEntry) -> AuditEntry:
    """Insert `entry`; it with the id the database gave it."""
    values = entry.model_dump(mode="python", exclude={"id"})
    values["action"] = entry.action.value
    values["details"] = entry.model_dump(mode="json")["details"]  # what JSON columns hold
    entry_id = (await session.execute(insert(AUDIT).values(**values).returning(AUDIT.c.id))).scalar_one()
    return entry.model_copy(update={"id": entry_id})


async def list_audit(session: AsyncConnection, *, before: int | None, limit: int) -> list[AuditEntry]:
    """At most `limit` entries, newest (largest id) first, with an id below `before`."""
    query = select(AUDIT).order_by(AUDIT.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(AUDIT.c.id < before)
    return [_entry(row) for row in (await session.execute(query)).all()]


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=AuditAction(row.action),
        subject=row.subject,
        trace_id=row.trace_id,
        details=row.details,
    )


class AuditSQL(SQLEngine):
    """`AuditLog` over the shared engine."""

    async def record_audit(self, entry: AuditEntry) -> AuditEntry:
        async with self._session(write=True) as session:
            return await record_audit(session, entry)

    @idempotent
    async def list_audit(self, *, before: int | None = None, limit: int = 100) -> list[AuditEntry]:
        if limit < 1:
            raise BadRequestError(f"limit must be at least 1, got {limit}")
        async with self._session() as session:
            return await list_audit(session, before=before, limit=limit)
