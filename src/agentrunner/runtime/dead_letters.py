"""The dead-letter office: keeps every event the bus gave up on, lists them, and hands
one back to the bus on request (ARCHITECTURE §5: inspectable and replayable).

A dead letter belongs to the tenant of its event (its tenant header; an invocation's
payload names it): a tenant lists, replays and discards its own, an admin every one;
another tenant's is answered as a missing one (ARCHITECTURE §10).
"""

from __future__ import annotations

from agentrunner.domain.errors import DeadLetterNotFoundError
from agentrunner.domain.event import DeadLetter, Event, StoredDeadLetter
from agentrunner.logs import get_logger
from agentrunner.ports.bus import EventBus, Subscription
from agentrunner.ports.metrics import Metrics
from agentrunner.ports.state import DeadLetterStore
from agentrunner.runtime.ownership import owned
from agentrunner.runtime.topics import TENANT_HEADER, invoke_topic
from agentrunner.tracing import visible_tenant

log = get_logger(__name__)


class DeadLetterOffice:
    """Records dead letters in the state store and replays them through the bus."""

    def __init__(self, *, bus: EventBus, store: DeadLetterStore, metrics: Metrics | None = None) -> None:
        self._bus = bus
        self._store = store
        self._metrics = metrics
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Take dead letters off the bus into the database (a letter leaves the bus only
        once it is recorded)."""
        self._subscription = await self._bus.subscribe_dead_letters(self._record)

    async def stop(self) -> None:
        """Stop taking dead letters; those left stay on the bus."""
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None

    async def _record(self, letter: DeadLetter) -> None:
        stored = await self._store.record_dead_letter(letter, tenant=tenant_of(letter.event))
        if self._metrics is not None:
            self._metrics.dead_lettered(letter.queue)
        log.warning(
            "dead letter recorded",
            dead_letter_id=stored.id,
            queue=letter.queue,
            topic=letter.event.topic,
            error=letter.error,
        )

    async def list(self, *, include_replayed: bool = False, limit: int = 100) -> list[StoredDeadLetter]:
        """The caller's dead letters, newest first."""
        return await self._store.list_dead_letters(
            include_replayed=include_replayed, limit=limit, tenant=visible_tenant()
        )

    async def get(self, letter_id: str) -> StoredDeadLetter:
        """The caller's dead letter with that id; raises `DeadLetterNotFoundError`."""
        stored = await self._store.get_dead_letter(letter_id)
        return owned(stored, stored.tenant, lambda: _no_letter(letter_id))

    async def discard(self, letter_id: str) -> None:
        """Forget a dead letter that will not be replayed; raises `DeadLetterNotFoundError`."""
        await self.get(letter_id)
        await self._store.delete_dead_letter(letter_id)
        log.info("dead letter discarded", dead_letter_id=letter_id)

    async def replay(self, letter_id: str) -> StoredDeadLetter:
        """Deliver the dead letter's event again to its queue, from attempt 1; raises
        `DeadLetterNotFoundError`."""
        stored = await self.get(letter_id)
        await self._bus.replay(stored.letter())
        replayed = await self._store.mark_dead_letter_replayed(letter_id)
        log.info("dead letter replayed", dead_letter_id=letter_id, queue=stored.queue, topic=stored.topic)
        return replayed


def tenant_of(event: Event) -> str | None:
    """The tenant whose work `event` was: its tenant header, or the tenant an invocation
    names (the orchestrator records it in the payload of `invoke.<agent>`)."""
    if event.headers.get(TENANT_HEADER):
        return event.headers[TENANT_HEADER]
    tenant = event.payload.get("tenant")
    if event.topic.startswith(invoke_topic("")) and isinstance(tenant, str) and tenant:
        return tenant
    return None


def _no_letter(letter_id: str) -> DeadLetterNotFoundError:
    return DeadLetterNotFoundError(f"dead letter {letter_id} not found: GET /dead-letters lists them")
