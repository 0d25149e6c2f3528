"""Webhooks out: when an execution with a `webhook_url` ends, its record is POSTed there,
signed with HMAC-SHA256 (`X-AgentRunner-Signature`), and retried with doubling waits (at
most an hour apart) until the receiver takes it (2xx) or `WEBHOOK_RETRY_SECONDS` (24 h)
have passed. Every attempt is kept and shown with the execution.

The finished event reaches one orchestrator replica through the shared `webhooks` queue;
the delivery is recorded before the event is acknowledged, so a crash loses nothing; the
retries are driven from the database by every replica's sweep, each delivery claimed by one
of them at a time. Only orchestrators with WEBHOOK_SECRET run a dispatcher (none sends
unsigned).

The URL is the caller's: the sender goes through the egress guard (https only unless
WEBHOOK_ALLOW_HTTP, public addresses only unless EGRESS_ALLOWED_NETWORKS), a refused one is
given up at once, and an attempt records only a coarse reason (`unreachable`, `timeout`,
`HTTP 4xx`, `refused: private address`): never the driver's message or the receiver's body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import timedelta

from agentrunner.background import every
from agentrunner.domain.egress import EgressRefusedError, status_reason
from agentrunner.domain.errors import AgentRunnerError, ExecutionNotFoundError
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, utcnow
from agentrunner.domain.webhook import SIGNATURE_HEADER, WebhookAttempt, WebhookDelivery, backoff_seconds, signature
from agentrunner.logs import get_logger
from agentrunner.ports.bus import EventBus, Subscription
from agentrunner.ports.metrics import Metrics
from agentrunner.ports.state import ExecutionStore, WebhookDeliveryStore
from agentrunner.ports.webhooks import WebhookSender
from agentrunner.runtime.topics import FINISHED_PATTERN

log = get_logger(__name__)

WEBHOOKS_QUEUE = "webhooks"
USER_AGENT = "agentrunner-webhooks/1"


class WebhookDispatcher:
    """Consumes `execution.finished.#`, records and makes deliveries, sweeps due retries."""

    def __init__(
        self,
        *,
        bus: EventBus,
        executions: ExecutionStore,
        deliveries: WebhookDeliveryStore,
        sender: WebhookSender,
        secret: bytes | None,
        retry_seconds: float,
        backoff_base_seconds: float,
        timeout_seconds: float,
        sweep_seconds: float,
        prefetch: int = 10,
        metrics: Metrics | None = None,
    ) -> None:
        self._bus = bus
        self._executions = executions
        self._deliveries = deliveries
        self._sender = sender
        self._secret = secret
        self._retry = timedelta(seconds=retry_seconds)
        self._backoff_base = backoff_base_seconds
        self._timeout = timeout_seconds
        self._sweep_seconds = sweep_seconds
        self._metrics = metrics
        self._prefetch = prefetch
        self._subscription: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def declare(self) -> None:
        """Declare the queue, so finished events wait for a dispatcher that is not up yet
        (without a secret there is none: nothing would ever consume it)."""
        if self._secret is not None:
            await self._bus.declare(WEBHOOKS_QUEUE, [FINISHED_PATTERN])

    async def start(self) -> None:
        """Consume finished executions and sweep retries; without a secret, nothing."""
        if self._secret is None:
            return
        self._subscription = await self._bus.subscribe(
            WEBHOOKS_QUEUE, [FINISHED_PATTERN], self._on_finished, prefetch=self._prefetch
        )
        self._sweeper = every(self._sweep_seconds, self._sweep, task="webhook-sweep", metrics=self._metrics)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None
        await self._sender.close()

    async def _on_finished(self, event: Event) -> None:
        carried = event.payload.get("execution")
        if isinstance(carried, dict) and not carried.get("webhook_url"):
            return  # most executions: no webhook, nothing to read
        # The event only says "look": the URL, the tenant and the record sent are the
        # execution as stored, so a forged `execution.finished` never makes the platform
        # POST (signed) anywhere, nor sends a record that was not saved.
        try:
            execution = await self._executions.get_execution(str(event.payload.get("execution_id")))
        except ExecutionNotFoundError:
            log.warning("finished event for an unknown execution ignored", execution_id=str(event.payload)[:80])
            return
        if not execution.status.is_terminal or not execution.webhook_url:
            return
        now = utcnow()
        await self._deliveries.add_webhook_delivery(
            WebhookDelivery(
                execution_id=execution.execution_id, url=execution.webhook_url, created_at=now, next_attempt_at=now
            )
        )
        await self.attempt(execution.execution_id, execution)

    async def _sweep(self) -> None:
        try:
            for execution_id in await self._deliveries.due_webhook_deliveries(now=utcnow()):
                await self.attempt(execution_id)
        except AgentRunnerError as exc:
            log.warning("webhook sweep failed; trying again", error=exc.message)

    async def attempt(self, execution_id: str, execution: Execution | None = None) -> None:
        """POST the execution's record to its webhook once, if its delivery is due and no
        other process holds it; record the attempt and what comes next."""
        now = utcnow()
        lease = now + timedelta(seconds=self._timeout + 30)
        delivery = await self._deliveries.claim_webhook_delivery(execution_id, now=now, lease_until=lease)
        if delivery is None:
            return
        if execution is None:
            execution = await self._executions.get_execution(execution_id)
        began = time.perf_counter()
        status_code, error, final = await self._post(delivery.url, execution)
        attempt = WebhookAttempt(
            at=now, status_code=status_code, error=error, duration_ms=round((time.perf_counter() - began) * 1000, 1)
        )
        attempts = [*delivery.attempts, attempt]
        settled = utcnow()
        update: dict[str, object] = {"attempts": attempts, "next_attempt_at": None}
        if error is None:
            update["delivered_at"] = settled
            log.info("webhook delivered", execution_id=execution_id, attempts=len(attempts))
        elif final or settled - delivery.created_at >= self._retry:
            update["gave_up_at"] = settled
            log.error("webhook given up", execution_id=execution_id, attempts=len(attempts), error=error)
        else:
            wait = backoff_seconds(len(attempts), self._backoff_base)
            update["next_attempt_at"] = min(settled + timedelta(seconds=wait), delivery.created_at + self._retry)
            log.warning("webhook attempt failed; retrying", execution_id=execution_id, error=error, in_seconds=wait)
        await self._deliveries.save_webhook_delivery(delivery.model_copy(update=update))

    async def _post(self, url: str, execution: Execution) -> tuple[int | None, str | None, bool]:
        """(status, coarse error, whether trying again is pointless)."""
        assert self._secret is not None  # started only with one
        body = json.dumps(
            {"event": "execution.finished", "execution": execution.model_dump(mode="json")}, separators=(",", ":")
        ).encode()
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            SIGNATURE_HEADER: signature(self._secret, int(time.time()), body),
            "x-agentrunner-execution-id": execution.execution_id,
        }
        try:
            status = await self._sender.post(url, body, headers, timeout_seconds=self._timeout)
        except EgressRefusedError as exc:
            log.warning("webhook refused by the egress guard", execution_id=execution.execution_id, why=exc.message)
            return None, exc.reason, True
        except AgentRunnerError as exc:
            return None, exc.message, False
        return status, None if 200 <= status < 300 else status_reason(status), False
