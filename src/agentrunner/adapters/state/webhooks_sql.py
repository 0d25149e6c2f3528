"""Webhook deliveries in SQL, leased to one sender at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, update

from agentrunner.adapters.state import schedule_sql
from agentrunner.adapters.state.engine import SQLEngine, idempotent
from agentrunner.adapters.state.tables import WebhookDeliveryRow
from agentrunner.domain.webhook import WebhookAttempt, WebhookDelivery

WEBHOOK_DELIVERIES = cast("Table", WebhookDeliveryRow.__table__)


class WebhookDeliveriesSQL(SQLEngine):
    """`WebhookDeliveryStore` over the shared engine."""

    async def add_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        async with self._session(write=True) as session:
            await schedule_sql.insert_ignoring_duplicates(session, WEBHOOK_DELIVERIES, [_delivery_values(delivery)])

    async def claim_webhook_delivery(
        self, execution_id: str, *, now: datetime, lease_until: datetime
    ) -> WebhookDelivery | None:
        async with self._session(write=True, atomic=True) as session:
            claimed = await session.execute(
                update(WebhookDeliveryRow)
                .where(
                    WebhookDeliveryRow.execution_id == execution_id,
                    WebhookDeliveryRow.next_attempt_at <= now,
                    WebhookDeliveryRow.delivered_at.is_(None),
                    WebhookDeliveryRow.gave_up_at.is_(None),
                )
                .values(next_attempt_at=lease_until)
            )
            if claimed.rowcount != 1:
                return None
            row = (
                await session.execute(select(WEBHOOK_DELIVERIES).where(WebhookDeliveryRow.execution_id == execution_id))
            ).one()
        return _delivery_from(row)

    async def save_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        values = _delivery_values(delivery)
        del values["execution_id"]
        async with self._session(write=True) as session:
            await session.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.execution_id == delivery.execution_id)
                .values(**values)
            )

    @idempotent
    async def due_webhook_deliveries(self, *, now: datetime, limit: int = 100) -> list[str]:
        query = (
            select(WebhookDeliveryRow.execution_id)
            .where(
                WebhookDeliveryRow.next_attempt_at <= now,
                WebhookDeliveryRow.delivered_at.is_(None),
                WebhookDeliveryRow.gave_up_at.is_(None),
            )
            .order_by(WebhookDeliveryRow.next_attempt_at)
            .limit(limit)
        )
        async with self._session() as session:
            return list((await session.execute(query)).scalars())

    @idempotent
    async def get_webhook_delivery(self, execution_id: str) -> WebhookDelivery | None:
        query = select(WEBHOOK_DELIVERIES).where(WebhookDeliveryRow.execution_id == execution_id)
        async with self._session() as session:
            row = (await session.execute(query)).first()
        return None if row is None else _delivery_from(row)


def _delivery_values(delivery: WebhookDelivery) -> dict[str, Any]:
    values = delivery.model_dump(exclude={"attempts"})
    values["attempts"] = [attempt.model_dump(mode="json") for attempt in delivery.attempts]
    return values


def _delivery_from(row: Any) -> WebhookDelivery:
    return WebhookDelivery(
        execution_id=row.execution_id,
        url=row.url,
        attempts=[WebhookAttempt.model_validate(attempt) for attempt in row.attempts],
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        delivered_at=row.delivered_at,
        gave_up_at=row.gave_up_at,
    )
