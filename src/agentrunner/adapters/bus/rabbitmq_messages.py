"""How events travel as RabbitMQ messages: an event's message, the headers a dead letter
carries (its queue and its error), and a dead letter read back for its handler."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from agentrunner.domain.event import DeadLetter, Event, decode_event, encode_event
from agentrunner.logs import get_logger
from agentrunner.ports.bus import DeadLetterHandler
from agentrunner.tracing import traced

log = get_logger(__name__)

# How long an exclusive queue's retry queues outlive it (they are not auto-deleted with it).
EXCLUSIVE_RETRY_EXPIRES_MS = 10 * 60 * 1000
QUEUE_HEADER = "x-agentrunner-queue"
ERROR_HEADER = "x-agentrunner-error"


def retry_queue(name: str, delay_ms: int, *, exclusive: bool) -> tuple[str, dict[str, Any]]:
    """The retry queue of queue `name` for one backoff delay, and its arguments: a message
    waits there `delay_ms`, then RabbitMQ dead-letters it straight back to `name`."""
    arguments: dict[str, Any] = {
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": name,
    }
    if exclusive:
        arguments["x-expires"] = EXCLUSIVE_RETRY_EXPIRES_MS + delay_ms
    return f"{name}.retry.{delay_ms}", arguments


def event_message(
    event: Event, extra_headers: dict[str, str] | None = None, *, persistent: bool = True
) -> aio_pika.Message:
    """`event` as a message, persistent unless it is a notice, its trace and ids in the
    headers too."""
    headers: dict[str, Any] = {"trace_id": event.trace_id, "event_id": event.event_id, "attempt": event.attempt}
    headers.update(extra_headers or {})
    return aio_pika.Message(
        encode_event(event),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT,
        message_id=event.event_id,
        headers=headers,
    )


async def take_dead_letter(handler: DeadLetterHandler, incoming: AbstractIncomingMessage) -> None:
    """Run `handler` for a dead letter; acked once handled, kept (requeued) when it fails."""
    headers = incoming.headers or {}
    try:
        event = decode_event(incoming.body)
    except ValueError:
        log.error("undecodable dead letter dropped", queue=str(headers.get(QUEUE_HEADER)))
        await incoming.ack()
        return
    letter = DeadLetter(queue=str(headers.get(QUEUE_HEADER, "")), event=event, error=str(headers.get(ERROR_HEADER, "")))
    with traced(event.trace_id):
        try:
            await handler(letter)
        except Exception:
            log.exception("dead-letter handler failed, keeping the letter", queue=letter.queue)
            await asyncio.sleep(1.0)  # no hot loop on a handler that keeps failing
            await incoming.nack(requeue=True)
            return
    await incoming.ack()
