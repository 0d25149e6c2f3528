"""The ports: what the runtime needs from the world, as Protocols.

Each port has one adapter per backend under `adapters/`, and every adapter passes the same
contract suite in `tests/contract/`, which is how embedded and distributed modes agree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from agentrunner.domain.agent import AgentConfig, LLMConfig
from agentrunner.domain.audit import AuditEntry
from agentrunner.domain.event import DeadLetter, Event, StoredDeadLetter
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.llm import Completion, LLMRequest, StreamItem, ToolDefinition
from agentrunner.domain.plan import PlanRun, PlanRunStatus
from agentrunner.domain.schedule import Activity, Schedule, ScheduleFire
from agentrunner.domain.slack import SlackMessage
from agentrunner.domain.state import AgentState, UsageTotals
from agentrunner.domain.webhook import WebhookDelivery

EventHandler = Callable[[Event], Awaitable[None]]
DeadLetterHandler = Callable[[DeadLetter], Awaitable[None]]


class Subscription(Protocol):
    """A running consumer of one queue."""

    @property
    def queue(self) -> str:
        """The queue it consumes."""
        ...

    async def cancel(self, grace_seconds: float = 10.0) -> None:
        """Stop taking messages; in-flight handlers get `grace_seconds` to finish."""
        ...


class EventBus(Protocol):
    """Topic-routed, at-least-once delivery of events (ARCHITECTURE §5).

    Contract: `publish` returns only once the bus holds the event; every queue bound with a
    matching pattern gets one copy; consumers of one queue share its messages; a handler
    that raises has its event delivered again after a backoff (attempt + 1), and after the
    last attempt it becomes a dead letter; `trace_id` travels with every event and is the
    current trace while its handler runs.
    """

    async def start(self) -> None:
        """Connect; must be called before publish or subscribe."""
        ...

    async def publish(self, event: Event) -> None:
        """Route `event` by its topic to every bound queue; raise if it cannot be accepted."""
        ...

    async def subscribe(
        self,
        queue: str,
        patterns: Sequence[str],
        handler: EventHandler,
        *,
        prefetch: int = 1,
        exclusive: bool = False,
    ) -> Subscription:
        """Declare `queue` bound to `patterns` and run `handler` for each of its events.

        `prefetch` bounds the handlers in flight for this consumer; an `exclusive` queue
        belongs to this process alone and disappears with it.
        """
        ...

    async def declare(self, queue: str, patterns: Sequence[str]) -> None:
        """Declare durable `queue` bound to `patterns` (idempotent), without consuming it:
        events that match are kept for its consumers, even before the first subscribes."""
        ...

    async def bind(self, queue: str, patterns: Sequence[str]) -> None:
        """Route `patterns` to `queue` too (declared by `subscribe`); raises
        `DependencyUnavailableError` when the queue does not exist."""
        ...

    async def unbind(self, queue: str, patterns: Sequence[str]) -> None:
        """Stop routing `patterns` to `queue`; events already in it stay there."""
        ...

    async def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        """How many events wait in each of `queues` for a consumer (delivered but not yet
        acknowledged ones not counted); 0 for a queue that does not exist."""
        ...

    async def subscribe_dead_letters(self, handler: DeadLetterHandler) -> Subscription:
        """Run `handler` for each event that failed every attempt (kept until handled)."""
        ...

    async def replay(self, letter: DeadLetter) -> None:
        """Deliver a dead letter's event again, to its own queue only, from attempt 1."""
        ...

    async def ping(self) -> None:
        """Raise `DependencyUnavailableError` when the bus cannot take events."""
        ...

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Stop consuming, let in-flight handlers finish within `grace_seconds`, then close."""
        ...


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """An agent as the registry table keeps it, for every role to read."""

    name: str
    source: str
    status: str
    reasons: list[str]
    config: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An event written with the change that caused it, not yet confirmed published."""

    id: str
    event: Event


@dataclass(frozen=True, slots=True)
class ExecutionPage:
    """One page of executions, newest first, and the cursor of the next page."""

    items: list[Execution]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class FireClaim:
    """A tick a scheduler replica claims, with what a won claim creates in the same
    transaction: the execution (for a fire that runs) and outbox events."""

    fire: ScheduleFire
    execution: Execution | None = None
    events: Sequence[Event] = ()


@dataclass(frozen=True, slots=True)
class UnfinishedFire:
    """A fire whose run has not ended (`fire.outcome` queued or running) or that is held
    (`fire.status` pending, no execution), and the timeout of its schedule."""

    fire: ScheduleFire
    timeout_seconds: float


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """A request recorded under an idempotency key: its fingerprint and, once answered, the
    answer (`status_code` None while it is still running)."""

    fingerprint: str
    created_at: datetime
    status_code: int | None = None
    response: bytes = b""
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """An `Idempotency-Key` taken in the same transaction as the execution it starts, so
    the key costs no write of its own: the key (sha256 of caller, route and key), the
    request's fingerprint, and the time before which an earlier record has expired."""

    key: str
    fingerprint: str
    expired_before: datetime


@dataclass(frozen=True, slots=True)
class KeyedInvocation:
    """The invocation recorded under an idempotency key: its execution, and the fingerprint
    of its request (a retry must have the same)."""

    execution_id: str
    fingerprint: str
    created_at: datetime


class IdempotencyKeyTakenError(Exception):
    """The key of an `IdempotencyClaim` belongs to an earlier invocation (`earlier`):
    nothing was recorded. Not an error to the caller: its retry is answered with that one."""

    def __init__(self, earlier: KeyedInvocation) -> None:
        super().__init__("idempotency key already used")
        self.earlier = earlier


class StateStore(Protocol):
    """Durable records of the platform (ARCHITECTURE §6).

    Contract: a write that returned is durable; reads see every write that returned.

    Ownership (issue 19): executions, sessions, plan runs, API schedules, dead letters and
    idempotency records keep the tenant they belong to. Lists take a `tenant`: given, only
    that tenant's records (those without one are nobody's: only an unfiltered list shows
    them); None, all. A session is named by (agent, tenant, session id): the same id of two
    tenants is two sessions, and None is the implicit tenant of auth off. Single-record
    reads by id return the record whatever its tenant: the caller compares `tenant` with
    `tracing.visible_tenant()` (runtime/ownership.py) and answers a miss for another's.
    """

    async def start(self) -> None:
        """Open the connection pool and make sure the schema exists."""
        ...

    async def close(self) -> None:
        """Release every connection."""
        ...

    async def ping(self) -> None:
        """Raise `DependencyUnavailableError` when the database does not answer."""
        ...

    async def create_execution(
        self, execution: Execution, *, events: Sequence[Event] = (), idempotency: IdempotencyClaim | None = None
    ) -> None:
        """Record a new execution (its id must be new, else `ConflictError`), and append
        `events` to the outbox in the same transaction. With `idempotency`, its key is
        recorded in that transaction too, naming this execution; when the key is already
        held (and not expired) nothing is recorded and `IdempotencyKeyTakenError` says by what."""
        ...

    async def save_execution(
        self,
        execution: Execution,
        *,
        events: Sequence[Event] = (),
        only_if: frozenset[ExecutionStatus] | None = None,
    ) -> None:
        """Replace the stored execution with the same id (raises `ExecutionNotFoundError`),
        appending `events` to the outbox in the same transaction. With `only_if`, the write
        happens only while the stored status is one of those, else `ConflictError` (so a
        cancel and a worker starting the same execution cannot both win)."""
        ...

    async def start_execution(self, execution_id: str, *, worker: str, provider: str, model: str) -> Execution:
        """Begin one more attempt of a queued or running execution, in one atomic step:
        status running, attempts + 1, `started_at` kept from the first attempt (else now),
        and who runs it on what. Returns the execution as stored. Raises
        `ExecutionNotFoundError`, or `ConflictError` when it already ended (a cancel that
        won the race, a redelivery of a finished one)."""
        ...

    async def get_execution(self, execution_id: str) -> Execution:
        """The execution with that id (raises `ExecutionNotFoundError`)."""
        ...

    async def list_executions(
        self,
        *,
        agent: str | None = None,
        status: ExecutionStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tenant: str | None = None,
    ) -> ExecutionPage:
        """Executions matching the filters (of `tenant` when given), newest first, `limit` at a time."""
        ...

    async def load_state(self, agent: str, session_id: str, *, tenant: str | None = None) -> AgentState:
        """The state of `agent` in `tenant`'s session `session_id` (raises `StateNotFoundError`,
        also when only another tenant has a session of that id)."""
        ...

    async def save_state(self, state: AgentState, *, expected_version: int | None) -> AgentState:
        """Store `state` (in the session of `state.tenant`) and return it with its new version.

        `expected_version` is the version the writer read (0: there was none); when the
        stored version differs, raise `ConflictError` and change nothing. None overwrites
        whatever is stored.
        """
        ...

    async def delete_state(self, agent: str, session_id: str, *, tenant: str | None = None) -> None:
        """Forget the state of `agent` in `tenant`'s session `session_id` (raises `StateNotFoundError`)."""
        ...

    async def usage(
        self,
        *,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        tenant: str | None = None,
    ) -> UsageTotals:
        """Tokens and cost of executions created in [since, until) (of one tenant), per
        agent and in all."""
        ...

    async def pending_events(self, *, limit: int = 100, older_than_seconds: float = 0.0) -> list[OutboxEntry]:
        """Outbox events not yet marked published, oldest first."""
        ...

    async def mark_published(self, entry_ids: Sequence[str]) -> None:
        """Record that these outbox events reached the bus."""
        ...

    async def add_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        """Keep a delivery to make (one per execution: a second add changes nothing)."""
        ...

    async def claim_webhook_delivery(
        self, execution_id: str, *, now: datetime, lease_until: datetime
    ) -> WebhookDelivery | None:
        """The delivery, when it is due at `now` and still open; its next attempt moves to
        `lease_until` so no other process tries it meanwhile. None otherwise."""
        ...

    async def save_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        """Write a delivery's attempts and what comes next."""
        ...

    async def due_webhook_deliveries(self, *, now: datetime, limit: int = 100) -> list[str]:
        """Execution ids of open deliveries due at `now`, oldest first."""
        ...

    async def get_webhook_delivery(self, execution_id: str) -> WebhookDelivery | None:
        """The delivery of an execution's record, if it has a webhook."""
        ...

    async def claim_idempotency_key(
        self,
        key: str,
        fingerprint: str,
        *,
        expired_before: datetime,
        abandoned_before: datetime,
        tenant: str | None = None,
    ) -> IdempotentRequest | None:
        """None when this caller now owns `key` (new, or its record was created before
        `expired_before`, or was left unanswered and untouched since `abandoned_before`),
        recorded as `tenant`'s; otherwise the request already recorded under it. The
        caller makes `key` from the tenant too, so a key never names another tenant's answer."""
        ...

    async def keyed_invocation(self, key: str, *, expired_before: datetime) -> KeyedInvocation | None:
        """The invocation recorded under an `IdempotencyClaim`'s key, unless none or expired."""
        ...

    async def touch_idempotency_key(self, key: str) -> None:
        """The request that owns `key` is still running."""
        ...

    async def complete_idempotency_key(self, key: str, status_code: int, response: bytes, content_type: str) -> None:
        """Keep the answer of the request that owns `key`, for its retries."""
        ...

    async def release_idempotency_key(self, key: str) -> None:
        """Forget `key` (its request gave no answer worth replaying): a retry runs anew."""
        ...

    async def record_dead_letter(self, letter: DeadLetter, *, tenant: str | None = None) -> StoredDeadLetter:
        """Keep a dead letter as `tenant`'s (the tenant of its event); the same event dead in
        the same queue again replaces the earlier record (with the newer error) instead of
        adding one."""
        ...

    async def list_dead_letters(
        self, *, include_replayed: bool = False, limit: int = 100, tenant: str | None = None
    ) -> list[StoredDeadLetter]:
        """Dead letters (of `tenant` when given), newest first."""
        ...

    async def get_dead_letter(self, letter_id: str) -> StoredDeadLetter:
        """The dead letter with that id (raises `DeadLetterNotFoundError`)."""
        ...

    async def mark_dead_letter_replayed(self, letter_id: str) -> StoredDeadLetter:
        """Record that the dead letter was handed back to the bus."""
        ...

    async def delete_dead_letter(self, letter_id: str) -> None:
        """Forget a dead letter (raises `DeadLetterNotFoundError`)."""
        ...

    async def sync_agents(self, agents: Sequence[AgentRecord]) -> None:
        """Make the registry table hold exactly `agents`."""
        ...

    async def list_agents(self) -> list[AgentRecord]:
        """The registry table, by name."""
        ...

    # -- schedules (ARCHITECTURE §4 scheduled mode) ---------------------------------

    async def sync_config_schedules(self, schedules: Sequence[Schedule]) -> None:
        """Make the schedules from agent files exactly `schedules`: add new ones, update
        changed definitions (keeping `paused`; `updated_at` moves), delete the others.
        An unchanged definition is left as it is, so replicas may all call this."""
        ...

    async def create_schedule(self, schedule: Schedule) -> Schedule:
        """Store a new schedule (its id must be new, else `ConflictError`)."""
        ...

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """The schedule with that id, with its `last_fire_at` (raises `ScheduleNotFoundError`)."""
        ...

    async def list_schedules(self, *, agent: str | None = None, tenant: str | None = None) -> list[Schedule]:
        """Every schedule (of `agent`; created by `tenant` when given), by id, each with its
        `last_fire_at`."""
        ...

    async def delete_schedule(self, schedule_id: str) -> None:
        """Forget a schedule and its fires (raises `ScheduleNotFoundError`); executions stay."""
        ...

    async def set_schedule_paused(self, schedule_id: str, paused: bool) -> Schedule:
        """Pause or resume a schedule (`updated_at` moves when it changes: ticks while it was
        paused are not owed); raises `ScheduleNotFoundError`."""
        ...

    async def schedules_version(self) -> str:
        """A value that changes whenever a schedule is added, changed or deleted (not when
        it fires): replicas compare it to know when to reload."""
        ...

    async def schedule_activity(self, schedule_ids: Sequence[str]) -> dict[str, Activity]:
        """For the schedules of `schedule_ids` that have any: an execution queued or running,
        a fire held for later. Absent ids have neither."""
        ...

    async def claim_fires(self, claims: Sequence[FireClaim]) -> list[ScheduleFire]:
        """Claim ticks: each (schedule_id, fire_time) is claimed once across all callers,
        ever. For the claims won (returned), the fire, its execution and its events are
        written in one transaction; claims already taken, or of deleted schedules, are
        dropped."""
        ...

    async def release_fire(self, fire_id: str, execution: Execution, events: Sequence[Event] = ()) -> bool:
        """Turn a held (`pending`) fire into a run of `execution`, with `events` in the same
        transaction; False, and nothing written, when it is no longer pending."""
        ...

    async def unfinished_fires(self, *, limit: int = 1000) -> list[UnfinishedFire]:
        """Fires held for later and fires whose execution is queued or running, oldest first."""
        ...

    async def list_fires(
        self, schedule_id: str, *, limit: int = 50, before: datetime | None = None
    ) -> list[ScheduleFire]:
        """Fires of a schedule with fire time before `before`, newest first, each with its
        execution's outcome, timings and result (raises `ScheduleNotFoundError`)."""
        ...

    # -- plan runs (ARCHITECTURE §4 collaborative mode) ------------------------------

    async def create_plan_run(self, run: PlanRun, *, events: Sequence[Event] = ()) -> PlanRun:
        """Store a new run with its steps and clarifications, and `events` in the outbox,
        in one transaction; returns it at version 1. Its id must be new, else `ConflictError`."""
        ...

    async def save_plan_run(self, run: PlanRun, *, events: Sequence[Event] = ()) -> PlanRun:
        """Write the whole run (row, steps, clarifications) and `events` in one transaction,
        only while the stored version is `run.version`; returns it at the next version.
        Raises `ConflictError` when another writer saved it meanwhile (nothing written),
        `PlanRunNotFoundError` when there is no such run."""
        ...

    async def get_plan_run(self, run_id: str) -> PlanRun:
        """The run with its steps and clarifications (raises `PlanRunNotFoundError`)."""
        ...

    async def list_plan_runs(
        self,
        *,
        agent: str | None = None,
        status: PlanRunStatus | None = None,
        limit: int = 50,
        tenant: str | None = None,
    ) -> list[PlanRun]:
        """Runs matching the filters (of `tenant` when given), newest first, with their
        steps and clarifications."""
        ...


class PurgeKind(StrEnum):
    """What the retention purge deletes, each kind only once it has ended (runtime/retention.py)."""

    EXECUTIONS = "executions"  # terminal ones, their tool calls inside; usage rolled up first
    PLAN_RUNS = "plan_runs"  # ended runs with their steps and clarifications (the executions' window)
    OUTBOX = "outbox"  # events already published (the executions' window)
    FIRES = "fires"  # ticks that fired or were skipped; held ones (pending) are kept
    DEAD_LETTERS = "dead_letters"  # replayed or not: the window is the operator's time to look
    WEBHOOK_DELIVERIES = "webhook_deliveries"  # delivered or given up; ones still retrying are kept
    IDEMPOTENCY_KEYS = "idempotency_keys"  # past IDEMPOTENCY_TTL_SECONDS: no retry can use them


class Retention(Protocol):
    """Deletes records past their retention window, a small batch at a time.

    Contract: `purge` deletes only records of `kind` that have ended (see `PurgeKind`) and
    are older than `before`, at most `limit` of them, in one short transaction, and returns
    how many; two purgers at once never delete a row twice nor wait on each other's rows.
    An execution's usage moves to the usage rollup in the transaction that deletes it, so
    `StateStore.usage` counts it exactly once, before and after. Raises
    `DependencyUnavailableError` when the database is not answering.
    """

    def purge_lease(self) -> AbstractAsyncContextManager[bool]:
        """Enter: True when this process is the one purger of the deployment until exit
        (PostgreSQL: a session advisory lock, freed if the process dies), False when another
        process holds it."""
        ...

    async def purge(self, kind: PurgeKind, *, before: datetime, limit: int) -> int:
        """Delete at most `limit` ended records of `kind` older than `before`; how many were."""
        ...


class AuditLog(Protocol):
    """Who changed what: an append-only record of the changes callers make (see
    `domain/audit.py`), apart from `StateStore` because only the audit writer and
    `GET /audit` use it.

    Contract: `record_audit` appends one entry and returns it with its `id`, larger than
    every id before it; `list_audit` returns at most `limit` entries, newest first, only
    those with an id below `before` when it is given. Nothing in agentrunner changes or
    deletes an entry. Both raise `DependencyUnavailableError` when the database is not
    answering.
    """

    async def record_audit(self, entry: AuditEntry) -> AuditEntry:
        """Append `entry`; it as stored, with its id."""
        ...

    async def list_audit(self, *, before: int | None = None, limit: int = 100) -> list[AuditEntry]:
        """The newest `limit` entries (with an id below `before`, when given), newest first."""
        ...


class SlotRenewal(StrEnum):
    """What a renewal found: the holder's lease `kept`; the holder gone but its place free,
    so `back` in (the limit holds); or its place `lost` to another holder (not added)."""

    KEPT = "kept"
    BACK = "back"
    LOST = "lost"


class Slots(Protocol):
    """Concurrency slots shared by every process: at most `limit` holders of a scope at
    once, each lease expiring unless renewed (a dead holder frees its slot).

    Contract: a lease's time passes only while the store is called (by anyone: renewals,
    takers asking again); a stretch in which nobody reaches the store counts for at most
    half a lease, so leases do not run out while the store is down or paused for everyone,
    and its holders renew them when it answers again. The slots' clock never runs faster
    than real time (as the store's host measures it), so a lease taken or renewed by a call
    sent at some moment lasts at least `ttl_seconds` from that moment. A store that can lose its data while holders
    live (Redis restarted without persistence) fences: the first call that finds it empty
    (fresh or restarted) opens a grace of one lease (that call's `ttl_seconds`) in which new
    holders are refused while renewals (reclaims) succeed, so the running holders are back
    in before anyone new gets a slot. No call ever makes a scope hold more than `limit`.
    Raises `DependencyUnavailableError` when the store does not answer (the call may still
    have been applied: every method is idempotent for a holder, so trying again is safe).
    """

    async def acquire_slot(self, scope: str, holder: str, limit: int, ttl_seconds: float) -> bool:
        """Take (or keep) one of `scope`'s `limit` slots for `holder`; False when all are
        taken (or the store's grace after losing its data is on)."""
        ...

    async def renew_slot(self, scope: str, holder: str, limit: int, ttl_seconds: float) -> SlotRenewal:
        """Extend `holder`'s lease: `KEPT` when the holder still had its slot (its lease
        alive, or run out with nobody asking for a slot since). When it was gone (its lease
        ran out and a taker asked, or the store lost its data), the holder is added back if
        fewer than `limit` hold the scope, whatever the grace (it was running): `BACK`;
        otherwise it is not, and the answer is `LOST` (another holder has its place)."""
        ...

    async def release_slot(self, scope: str, holder: str) -> None:
        """Give the slot back (nothing when `holder` holds none)."""
        ...


class Buckets(Protocol):
    """Token buckets shared by every process: `per_minute` tokens a minute, smoothed (at
    most one second's worth at once), for request and token rate limits.

    Contract: raises `DependencyUnavailableError` when the store does not answer (the call
    may still have been applied: trying again errs on the side of fewer calls).
    """

    async def take_tokens(self, scope: str, per_minute: float, amount: float) -> float:
        """Take `amount` tokens (0: only check the bucket is not in debt); 0.0 when taken,
        else the seconds to wait before they are there (nothing taken)."""
        ...

    async def debit_tokens(self, scope: str, per_minute: float, amount: float) -> None:
        """Take `amount` tokens even into debt (tokens a call used; a vendor's Retry-After)."""
        ...


class Cache(Protocol):
    """A hot, lossy key-value cache in front of the state store."""

    async def get(self, key: str) -> bytes | None:
        """The cached value, or None when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Cache `value` for `ttl_seconds`."""
        ...

    async def add(self, key: str, value: bytes, ttl_seconds: float) -> bool:
        """Cache `value` only when `key` holds nothing; True when it was stored. Read fills
        use it, so a slow reader never overwrites what a writer has just put there."""
        ...

    async def ping(self) -> None:
        """Raise `DependencyUnavailableError` when the cache does not answer."""
        ...

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class LLMProvider(Protocol):
    """One LLM vendor behind one interface (ARCHITECTURE §7).

    Contract: answers with text and/or tool calls and the vendor's token usage; raises
    `LLMRateLimitError` (with `retry_after` in its context when the vendor said),
    `LLMUnavailableError`, `LLMAuthError` or `LLMBadRequestError`, never an SDK exception;
    makes one attempt (retrying is the caller's policy); never blocks the event loop.
    """

    name: str

    async def complete(self, request: LLMRequest) -> Completion:
        """Ask the model once and return its whole answer."""
        ...

    def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        """Ask the model once and yield its text as it comes (`TextDelta`s), then one final
        `Completion` with the whole text, tool calls and usage."""
        ...

    async def close(self) -> None:
        """Release the SDK client."""
        ...


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who calls a tool: the execution it serves (tools that keep state or publish read it)."""

    agent: str
    execution_id: str
    session_id: str | None
    trace_id: str
    # The tenant the execution counts for and its depth in a chain: what a tool that
    # starts more work (`publish_event`) hands on, so the chain keeps both.
    tenant: str | None = None
    chain_depth: int = 0


class Tool(Protocol):
    """One tool an agent may call (built in, installed through the `agentrunner.tools`
    entry points, or served by an MCP server).

    Contract: `call` gets arguments already valid against `definition.parameters` and
    returns the result as text (JSON for structured results); any exception it raises
    becomes an error result for the model, never a failed run. The agent loop cuts a call
    short after `timeout_seconds`.
    """

    @property
    def definition(self) -> ToolDefinition:
        """The name, description and argument schema offered to the model."""
        ...

    @property
    def timeout_seconds(self) -> float:
        """How long one call may take."""
        ...

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> str:
        """Run the tool once and return its result."""
        ...


class ToolCatalog(Protocol):
    """The tools of every agent: built-in and installed tools by name, MCP servers connected.

    Contract: `load` never raises for a tool that cannot be had (an unreachable server, an
    unknown name): it reports it as a reason, and the agent runs without those tools.
    MCP sessions are kept across executions and reconnected when they drop.
    """

    async def load(self, agents: Sequence[AgentConfig]) -> dict[str, list[str]]:
        """Connect and list the tools of `agents` (sessions of unchanged entries kept, those
        of removed ones closed); returns, per agent name, why some of its tools are missing."""
        ...

    def tools_for(self, agent: str) -> list[Tool]:
        """The tools `agent` offers to its model now (empty when it has none)."""
        ...

    async def retry_unreachable(self) -> bool:
        """Try again the MCP servers the last `load` could not reach; True when one now
        answers (load again to offer its tools)."""
        ...

    async def close(self) -> None:
        """Close every MCP session."""
        ...


class Metrics(Protocol):
    """What the platform counts for operators (served on `/metrics` by every role).

    Contract: recording never raises and never blocks; each process counts its own work.
    """

    def execution_finished(self, execution: Execution, mode: str) -> None:
        """An execution ended: its status, its time from accepted to ended, its tokens and cost."""
        ...

    def attempt_retried(self, agent: str) -> None:
        """An attempt failed and the execution will be tried again."""
        ...

    def dead_lettered(self, queue: str) -> None:
        """An event failed every delivery and became a dead letter."""
        ...

    def schedule_fired(self, lateness_seconds: float) -> None:
        """A schedule's tick was fired, `lateness_seconds` after its time."""
        ...

    def queue_depths_measured(self, depths: Mapping[str, int]) -> None:
        """The events waiting in each queue just now (queues absent from `depths` are gone)."""
        ...

    def limits_store_unavailable(self, unavailable: bool) -> None:
        """The store of the concurrency slots and rate-limit buckets stopped (True) or
        started again (False) answering this process."""
        ...

    def limits_store_waited(self, kind: str) -> None:
        """A taker of a slot (`kind` "slot") or of a rate-limit token ("rate") started
        waiting for the store to answer, or a running execution that lost its slot
        ("slot_lost") started waiting for one again before its next model or tool call."""
        ...

    def event_loop_lag(self, seconds: float) -> None:
        """The event loop ran a timer `seconds` late (runtime/loop_lag.py)."""
        ...

    def background_error(self, task: str) -> None:
        """An iteration of the background loop `task` raised what the loop did not expect;
        the loop goes on (background.py)."""
        ...

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in the text exposition format, and its content type."""
        ...


class ProviderCatalog(Protocol):
    """Finds the LLMProvider an agent's `llm_config` names, and says why one cannot run."""

    def unavailable_reason(self, llm: LLMConfig) -> str | None:
        """Why agents with this `llm_config` cannot run now (missing key, ...), else None."""
        ...

    async def provider_for(self, llm: LLMConfig) -> LLMProvider:
        """The provider client for `llm` (created once, off the event loop, then shared);
        raises `LLMAuthError` when it is not configured."""
        ...

    async def close(self) -> None:
        """Close every provider client."""
        ...


class SlackRequestVerifier(Protocol):
    """Tells whether a request really comes from Slack (signed with the app's secret)."""

    def problem(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """Why the request is not Slack's (missing headers, stale timestamp, wrong
        signature), or None when its signature over the raw `body` is valid. `headers`
        have lower-case names."""
        ...


class SlackReplies(Protocol):
    """Sends agentrunner's answers to Slack.

    Contract: returns once Slack accepted the message; rate limits (429) are waited out
    after Slack's Retry-After a bounded number of times; anything else raises
    `SlackUnavailableError` (retryable: the caller's bus redelivers) or
    `SlackRejectedError` (Slack refused the message itself), never an SDK exception.
    """

    async def respond(self, response_url: str, message: SlackMessage) -> None:
        """Post `message` to a command's or an interaction's `response_url`."""
        ...

    async def post(self, channel: str, message: SlackMessage, *, thread_ts: str | None = None) -> None:
        """Post `message` in `channel` (in the thread of `thread_ts` when given), as the bot."""
        ...

    async def close(self) -> None:
        """Release HTTP sessions."""
        ...


class WebhookSender(Protocol):
    """POSTs to webhook receivers (an HTTP client)."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout_seconds: float) -> int:
        """The receiver's HTTP status; raises `DependencyUnavailableError` (message:
        `unreachable` or `timeout`, nothing more) when it could not be reached or did not
        answer in time, `EgressRefusedError` when the URL or its address is refused."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class RequestSpan(Protocol):
    """The span of one HTTP request, open while the request is served."""

    @property
    def caller_trace_id(self) -> str | None:
        """The trace id of the caller's trace this span continues (the request carried a W3C
        `traceparent`), else None: the span's trace is the request's own trace id."""
        ...

    def finish(self, *, route: str | None, status: int) -> None:
        """Name the span after the matched `route` (e.g. `/agents/{name}/invoke`) and record
        the response `status`; the span ends when its context manager exits."""
        ...


class Tracing(Protocol):
    """OpenTelemetry spans for the hops of an invocation: HTTP request, publish, consume,
    provider call (exported over OTLP; absent when tracing is off).

    Contract: spans of one invocation form one trace, across processes (W3C trace context
    travels in the event headers); a root span started while `tracing.traced(trace_id)`
    is active takes that 32-hex trace id, so the trace_id of the logs is the OTel trace id.
    Never raises into the work it observes.
    """

    def request_span(self, method: str, path: str, headers: Mapping[str, str]) -> AbstractContextManager[RequestSpan]:
        """A server span for an HTTP request (continuing the caller's `traceparent` header
        when it carries one); `headers` have lower-case names."""
        ...

    def traced_bus(self, bus: EventBus) -> EventBus:
        """`bus`, with a producer span around each publish (its context injected into the
        event's headers) and a consumer span around each handler (child of that context)."""
        ...

    def traced_catalog(self, catalog: ProviderCatalog) -> ProviderCatalog:
        """`catalog`, whose providers wrap each call to the model in a client span."""
        ...

    async def close(self) -> None:
        """Export the spans still buffered, then stop exporting."""
        ...
