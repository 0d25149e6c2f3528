"""The API's `Idempotency-Key` records in SQL."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, and_, delete, or_, select, update

from agentrunner.adapters.state import schedule_sql
from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.tables import IdempotencyKeyRow
from agentrunner.domain.execution import utcnow
from agentrunner.ports.state import IdempotentRequest

IDEMPOTENCY_KEYS = cast("Table", IdempotencyKeyRow.__table__)


class IdempotencySQL(SQLEngine):
    """`IdempotencyStore` over the shared engine."""

    async def claim_idempotency_key(
        self,
        key: str,
        fingerprint: str,
        *,
        expired_before: datetime,
        abandoned_before: datetime,
        tenant: str | None = None,
    ) -> IdempotentRequest | None:
        now = utcnow()
        row = {"key": key, "fingerprint": fingerprint, "created_at": now, "touched_at": now, "tenant": tenant}
        async with self._session(write=True) as session:  # a new key, the usual case: one statement
            if await schedule_sql.insert_ignoring_duplicates(
                session, IDEMPOTENCY_KEYS, [row], returning=IDEMPOTENCY_KEYS.c.key
            ):
                return None
        async with self._session(write=True, atomic=True) as session:
            await session.execute(
                delete(IdempotencyKeyRow).where(
                    IdempotencyKeyRow.key == key,
                    or_(
                        IdempotencyKeyRow.created_at < expired_before,
                        and_(IdempotencyKeyRow.completed_at.is_(None), IdempotencyKeyRow.touched_at < abandoned_before),
                    ),
                )
            )
            if await schedule_sql.insert_ignoring_duplicates(
                session, IDEMPOTENCY_KEYS, [row], returning=IDEMPOTENCY_KEYS.c.key
            ):
                return None
            found = (await session.execute(select(IDEMPOTENCY_KEYS).where(IdempotencyKeyRow.key == key))).first()
        if found is None:  # released between our insert and read: the caller may try again
            return await self.claim_idempotency_key(
                key, fingerprint, expired_before=expired_before, abandoned_before=abandoned_before, tenant=tenant
            )
        return IdempotentRequest(
            fingerprint=found.fingerprint,
            created_at=found.created_at,
            status_code=found.status_code,
            response=found.response or b"",
            content_type=found.content_type or "application/json",
        )

    @idempotent
    async def touch_idempotency_key(self, key: str) -> None:
        async with self._session(write=True) as session:
            await session.execute(
                update(IdempotencyKeyRow)
                .where(IdempotencyKeyRow.key == key, IdempotencyKeyRow.completed_at.is_(None))
                .values(touched_at=utcnow())
            )

    async def complete_idempotency_key(self, key: str, status_code: int, response: bytes, content_type: str) -> None:
        now = utcnow()
        async with self._session(write=True) as session:
            await session.execute(
                update(IdempotencyKeyRow)
                .where(IdempotencyKeyRow.key == key)
                .values(
                    status_code=status_code,
                    response=response,
                    content_type=content_type,
                    touched_at=now,
                    completed_at=now,
                )
            )

    async def release_idempotency_key(self, key: str) -> None:
        async with self._session(write=True) as session:
            await session.execute(delete(IdempotencyKeyRow).where(IdempotencyKeyRow.key == key))
