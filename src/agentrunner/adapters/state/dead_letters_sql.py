"""Dead letters in SQL: what the bus gave up on, kept for an operator."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, delete, insert, select, update

from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.rows import dead_letter_from, dead_letter_id
from agentrunner.adapters.state.tables import DeadLetterRow
from agentrunner.domain.errors import DeadLetterNotFoundError
from agentrunner.domain.event import DeadLetter, StoredDeadLetter
from agentrunner.domain.execution import utcnow

DEAD_LETTERS = cast("Table", DeadLetterRow.__table__)


class DeadLettersSQL(SQLEngine):
    """`DeadLetterStore` over the shared engine."""

    async def record_dead_letter(self, letter: DeadLetter, *, tenant: str | None = None) -> StoredDeadLetter:
        stored = StoredDeadLetter(
            id=dead_letter_id(letter),
            queue=letter.queue,
            topic=letter.event.topic,
            event=letter.event,
            error=letter.error,
            attempts=letter.event.attempt,
            tenant=tenant,
        )
        values = {
            "id": stored.id,
            "queue": stored.queue,
            "topic": stored.topic,
            "event": stored.event.model_dump(mode="json"),
            "error": stored.error,
            "attempts": stored.attempts,
            "created_at": stored.created_at,
            "replayed_at": None,
            "tenant": tenant,
        }
        async with self._session(write=True, atomic=True) as session:
            await session.execute(delete(DEAD_LETTERS).where(DEAD_LETTERS.c.id == stored.id))
            await session.execute(insert(DEAD_LETTERS).values(**values))
        return stored

    @idempotent
    async def list_dead_letters(
        self, *, include_replayed: bool = False, limit: int = 100, tenant: str | None = None
    ) -> list[StoredDeadLetter]:
        query = select(DEAD_LETTERS).order_by(DEAD_LETTERS.c.created_at.desc(), DEAD_LETTERS.c.id).limit(limit)
        if tenant is not None:
            query = query.where(DEAD_LETTERS.c.tenant == tenant)
        if not include_replayed:
            query = query.where(DEAD_LETTERS.c.replayed_at.is_(None))
        async with self._session() as session:
            rows = (await session.execute(query)).all()
        return [dead_letter_from(row) for row in rows]

    @idempotent
    async def get_dead_letter(self, letter_id: str) -> StoredDeadLetter:
        async with self._session() as session:
            row = (await session.execute(select(DEAD_LETTERS).where(DEAD_LETTERS.c.id == letter_id))).first()
        if row is None:
            raise DeadLetterNotFoundError(f"dead letter {letter_id} not found: GET /dead-letters lists them")
        return dead_letter_from(row)

    async def mark_dead_letter_replayed(self, letter_id: str) -> StoredDeadLetter:
        async with self._session(write=True) as session:
            result = await session.execute(
                update(DEAD_LETTERS).where(DEAD_LETTERS.c.id == letter_id).values(replayed_at=utcnow())
            )
            if result.rowcount != 1:
                raise DeadLetterNotFoundError(f"dead letter {letter_id} not found: GET /dead-letters lists them")
        return await self.get_dead_letter(letter_id)

    async def delete_dead_letter(self, letter_id: str) -> None:
        async with self._session(write=True) as session:
            result = await session.execute(delete(DEAD_LETTERS).where(DEAD_LETTERS.c.id == letter_id))
            if result.rowcount != 1:
                raise DeadLetterNotFoundError(f"dead letter {letter_id} not found: GET /dead-letters lists them")
