"""The state store: durable records of the platform (ARCHITECTURE §6), as facets.

Contract, for every facet: a write that returned is durable; reads see every write that
returned.

Ownership (issue 19): executions, sessions, plan runs, API schedules, dead letters and
idempotency records keep the tenant they belong to. Lists take a `tenant`: given, only
that tenant's records (those without one are nobody's: only an unfiltered list shows
them); None, all. A session is named by (agent, tenant, session id): the same id of two
tenants is two sessions, and None is the implicit tenant of auth off. Single-record
reads by id return the record whatever its tenant: the caller compares `tenant` with
`tracing.visible_tenant()` (runtime/ownership.py) and answers a miss for another's.

Why facets: one Protocol of 47 methods over eight kinds of record made every engine depend
on all of them, and made the cache decorator forward the 28 it does not cache. A facet is
what one kind of consumer uses, named after the records it reads and writes (an engine
asks for `ExecutionStore` and `PlanRunStore`, say, not for the whole store). Executions are
split by how they are read: one at a time by id (`ExecutionStore`, the part the cache
fronts) or many at once (`ExecutionQueries`, never cached). One adapter (`adapters/state/
sql.py`) implements every facet over one engine, so a write that spans records (an
execution and its outbox events) stays one transaction; `StateStore` is that whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from agentrunner.domain.event import DeadLetter, Event, StoredDeadLetter
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.plan import PlanRun, PlanRunStatus
from agentrunner.domain.schedule import Activity, Schedule, ScheduleFire
from agentrunner.domain.state import AgentState, UsageTotals
from agentrunner.domain.steps import Step
from agentrunner.domain.webhook import WebhookDelivery
from agentrunner.ports.agent_versions import AgentVersions
from agentrunner.ports.audit import AuditLog
from agentrunner.ports.evals import EvalRuns
from agentrunner.ports.retention import Retention
from agentrunner.ports.stats import ExecutionAggregates


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


class ExecutionStore(Protocol):
    """Executions one at a time: what invoking, running, cancelling and timing out an execution
    write and read back by id. The cache decorator (`adapters/state/cached.py`) fronts this
    facet: a finished execution never changes again, so it is the one read worth caching."""

    async def create_execution(
        self,
        execution: Execution,
        *,
        events: Sequence[Event] = (),
        idempotency: IdempotencyClaim | None = None,
        steps: Sequence[Step] = (),
    ) -> None:
        """Record a new execution (its id must be new, else `ConflictError`), and append
        `events` to the outbox in the same transaction. With `idempotency`, its key is
        recorded in that transaction too, naming this execution; when the key is already
        held (and not expired) nothing is recorded and `IdempotencyKeyTakenError` says by what.
        `steps`: its journal's first steps (a replay's, reused from its source), written in
        that transaction too: a refused execution leaves none behind."""
        ...

    async def save_execution(
        self,
        execution: Execution,
        *,
        events: Sequence[Event] = (),
        only_if: frozenset[ExecutionStatus] | None = None,
        steps: Sequence[Step] = (),
    ) -> None:
        """Replace the stored execution with the same id (raises `ExecutionNotFoundError`),
        appending `events` to the outbox in the same transaction. With `only_if`, the write
        happens only while the stored status is one of those, else `ConflictError` (so a
        cancel and a worker starting the same execution cannot both win). `steps` are
        written to the journal (as `StepJournal.record_step` writes them) in that
        transaction too, when the execution is: a run's last answer rides on its end."""
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


class ExecutionQueries(Protocol):
    """Reads over many executions (lists, usage totals, the execution recorded under an
    idempotency key): always from the database, which is why they are apart from
    `ExecutionStore` (nothing to cache)."""

    async def list_executions(
        self,
        *,
        agent: str | None = None,
        status: ExecutionStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tenant: str | None = None,
        agent_version: int | None = None,
    ) -> ExecutionPage:
        """Executions matching the filters (of `tenant`, on `agent_version`, when given), newest first."""
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

    async def keyed_invocation(self, key: str, *, expired_before: datetime) -> KeyedInvocation | None:
        """The invocation recorded under an `IdempotencyClaim`'s key, unless none or expired."""
        ...


class Outbox(Protocol):
    """The outbox of events written with the change that caused them (`runtime/outbox.py`
    publishes them); the writes that append to it are those of the other facets."""

    async def pending_events(self, *, limit: int = 100, older_than_seconds: float = 0.0) -> list[OutboxEntry]:
        """Outbox events not yet marked published, oldest first."""
        ...

    async def mark_published(self, entry_ids: Sequence[str]) -> None:
        """Record that these outbox events reached the bus."""
        ...


class SessionStore(Protocol):
    """Agent state per session (history, memory), under optimistic concurrency; cached like `ExecutionStore`."""

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


class IdempotencyStore(Protocol):
    """The `Idempotency-Key` records of the API (`api/idempotency.py`): a request's key
    claimed, kept alive, answered or released."""

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

    async def touch_idempotency_key(self, key: str) -> None:
        """The request that owns `key` is still running."""
        ...

    async def complete_idempotency_key(self, key: str, status_code: int, response: bytes, content_type: str) -> None:
        """Keep the answer of the request that owns `key`, for its retries."""
        ...

    async def release_idempotency_key(self, key: str) -> None:
        """Forget `key` (its request gave no answer worth replaying): a retry runs anew."""
        ...


class WebhookDeliveryStore(Protocol):
    """Webhook deliveries and their attempts, leased to one sender at a time (`runtime/webhooks.py`)."""

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


class DeadLetterStore(Protocol):
    """Events the bus gave up on, kept for an operator to list, replay or delete (`runtime/dead_letters.py`)."""

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


class AgentRecords(Protocol):
    """The agent registry table: written by the config role, read by every role."""

    async def sync_agents(self, agents: Sequence[AgentRecord]) -> None:
        """Make the registry table hold exactly `agents`."""
        ...

    async def list_agents(self) -> list[AgentRecord]:
        """The registry table, by name."""
        ...


class ScheduleStore(Protocol):
    """Schedules and their fires (`runtime/scheduler.py`, `runtime/schedule_watch.py`): a
    fire claimed by one scheduler replica creates its execution in the same transaction."""

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
        """Every schedule (of `agent`; created by `tenant` when given), by id, each with its `last_fire_at`."""
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


class PlanRunStore(Protocol):
    """Plan runs of the collaborative mode with their steps and clarifications, every save
    conditional on the version read (`runtime/plan_runs.py`)."""

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


class StepJournal(Protocol):
    """The journal of executions' steps (`domain/steps.py`, `runtime/journal.py`): each model
    call and tool call of an agent loop, recorded before the loop goes on, read back by a
    re-run to replay them. Written on the hot path: writes that come at once (the tool calls
    of one answer, steps of other executions) share one transaction. Purged with its
    execution by retention."""

    async def record_step(self, step: Step) -> None:
        """Write `step` under its key (execution, generation, seq), replacing what that key
        held (a started step ends, a re-run records again). Durable when it returns."""
        ...

    async def steps(self, execution_id: str) -> list[Step]:
        """Every step of an execution, by generation then seq (empty when it has none)."""
        ...


class StateStore(
    ExecutionStore,
    ExecutionQueries,
    ExecutionAggregates,
    Outbox,
    SessionStore,
    IdempotencyStore,
    WebhookDeliveryStore,
    DeadLetterStore,
    AgentRecords,
    AgentVersions,
    EvalRuns,
    ScheduleStore,
    PlanRunStore,
    StepJournal,
    Retention,
    AuditLog,
    Protocol,
):
    """The whole state store as an adapter implements it: every facet (retention, the audit
    log too) and the lifecycle only the node calls (start, close, ping). No engine takes it:
    each is given the facets it uses, so a cache decorator stands in for those it caches."""

    async def start(self) -> None:
        """Open the connection pool and make sure the schema exists."""
        ...

    async def close(self) -> None:
        """Release every connection."""
        ...

    async def ping(self) -> None:
        """Raise `DependencyUnavailableError` when the database does not answer."""
        ...
