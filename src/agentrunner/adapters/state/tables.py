"""SQLAlchemy models of the durable state, shared by SQLite and PostgreSQL.

Alembic migrations (`migrations/versions/`) create exactly these tables; a test proves
that autogenerate finds no difference between the two.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Payloads larger than this are stored gzip-compressed (ARCHITECTURE §6).
COMPRESS_OVER_BYTES = 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: agentrunner stores UTC-aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Marks JSON the standard library wrote (no JSON text starts with this byte, nor gzip).
_STDLIB_JSON = b"\x1e"


class CompressedJSON(TypeDecorator[Any]):
    """JSON stored as bytes, gzip-compressed when over `COMPRESS_OVER_BYTES`; reads are
    transparent (JSON text never starts with gzip's magic bytes)."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        try:
            raw = orjson.dumps(value)
        except TypeError:  # integers past 64 bits, lone surrogates: JSON allows both, the standard library takes them
            raw = _STDLIB_JSON + json.dumps(value, separators=(",", ":")).encode()  # ASCII: lone surrogates too
        return gzip.compress(raw, compresslevel=6) if len(raw) > COMPRESS_OVER_BYTES else raw

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        raw = bytes(value)
        text = gzip.decompress(raw) if raw.startswith(_GZIP_MAGIC) else raw
        if text.startswith(_STDLIB_JSON):  # orjson would read those integers as floats
            return json.loads(text[len(_STDLIB_JSON) :])
        return orjson.loads(text)


# Stable constraint names, so migrations can drop and alter them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Metadata of every agentrunner table."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class AgentRow(Base):
    """The agent registry: what each node loaded, so every role sees the same agents."""

    __tablename__ = "agents"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[Any]]
    config: Mapped[dict[str, Any] | None]
    updated_at: Mapped[datetime]


class AgentVersionRow(Base):
    """One version of an agent: a new content of its file, numbered per agent (see
    `domain.agent_version`). Kept for good: executions name the version they ran."""

    __tablename__ = "agent_versions"

    agent: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    document: Mapped[dict[str, Any]]
    config: Mapped[dict[str, Any]]  # the whole config, never shown: what pinned work runs on
    changes: Mapped[list[Any]]
    created_at: Mapped[datetime]


class EvalRunRow(Base):
    """One run of an eval suite (see `domain.eval_run.EvalRun`): the columns it is found by,
    and the whole record (its cases' results), rewritten as cases end."""

    __tablename__ = "eval_runs"
    __table_args__ = (
        Index("ix_eval_runs_suite_created", "suite", "created_at"),
        Index("ix_eval_runs_created", "created_at"),  # the retention purge's order
    )

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    suite: Mapped[str] = mapped_column(String(128))
    agent: Mapped[str] = mapped_column(String(128))
    agent_version: Mapped[int | None] = mapped_column(Integer)
    tenant: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    record: Mapped[Any] = mapped_column(CompressedJSON)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


# What `/usage` sums: carried in the execution indexes it ranges over (PostgreSQL INCLUDE).
_TOKENS = ["input_tokens", "output_tokens", "cost_usd"]
_USAGE_COLUMNS = ["agent", *_TOKENS]


class ExecutionRow(Base):
    """One execution (see `domain.execution.Execution`)."""

    __tablename__ = "executions"

    execution_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    input: Mapped[dict[str, Any]]
    session_id: Mapped[str | None] = mapped_column(String(256))
    output: Mapped[str | None] = mapped_column(Text)
    # The parsed answer of an agent with an `output_schema` (any JSON value; SQL NULL: none).
    output_json: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    error: Mapped[dict[str, Any] | None]
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(128))
    worker: Mapped[str | None] = mapped_column(String(64))
    # The schedule whose tick created it, if one did.
    schedule_id: Mapped[str | None] = mapped_column(String(64))
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    tenant: Mapped[str | None] = mapped_column(String(64))
    # Where the request came from, set by the platform's gateways (domain.execution.Execution.origin).
    origin: Mapped[dict[str, Any] | None]
    chain_depth: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The execution it replays ({"execution_id", "from_step"}), when a replay started it.
    replay_of: Mapped[dict[str, Any] | None]
    agent_version: Mapped[int | None] = mapped_column(Integer)
    # The online checks its answer failed (domain.execution.FailedCheck), if any.
    failed_checks: Mapped[list[Any] | None]
    # The tool calls of the attempt that ended it (domain.execution.ToolCallRecord), if any.
    tool_calls: Mapped[list[Any] | None]
    # The tool call it waits on, then the human's answer (domain.tool_gates.PendingToolCall).
    pending_tool_call: Mapped[dict[str, Any] | None]
    trace_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # The `Idempotency-Key` of the invocation that started it (sha256 of caller, route and
    # key) and that request's fingerprint: unique, so a retry finds this execution instead of
    # recording another, at no write of its own (api/idempotency.py).
    idempotency_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    idempotency_fingerprint: Mapped[str | None] = mapped_column(String(64))

    # Each filter of the list (and a tenant's agent or status) leads an index ending in the
    # list's order, so a page (at any depth) is a short index range; on PostgreSQL the usage
    # columns ride along, so `/usage` over a month reads the index alone (migration 0017).
    __table_args__ = (
        Index("ix_executions_created", "created_at", "execution_id", postgresql_include=_USAGE_COLUMNS),
        Index(
            "ix_executions_tenant_created", "tenant", "created_at", "execution_id", postgresql_include=_USAGE_COLUMNS
        ),
        Index("ix_executions_agent_created", "agent", "created_at", "execution_id", postgresql_include=_TOKENS),
        Index("ix_executions_status_created", "status", "created_at", "execution_id"),
        Index(
            "ix_executions_tenant_agent_created",
            "tenant",
            "agent",
            "created_at",
            "execution_id",
            postgresql_include=_TOKENS,
        ),
        Index("ix_executions_tenant_status_created", "tenant", "status", "created_at", "execution_id"),
    )


class AgentStateRow(Base):
    """An agent's memory for one session, versioned for optimistic concurrency."""

    __tablename__ = "agent_state"

    agent: Mapped[str] = mapped_column(String(128), primary_key=True)
    # The tenant whose session it is ("" with API auth off): part of the key, so two
    # tenants' sessions of the same id are two rows.
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True, server_default="")
    session_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    payload: Mapped[Any] = mapped_column(CompressedJSON)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class PlanRunRow(Base):
    """One run of a collaborative agent's plan (see `domain.plan.PlanRun`); its id is the
    id of the execution that started it. `version` grows with every save."""

    __tablename__ = "plan_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(24), index=True)
    task: Mapped[dict[str, Any]]
    plan: Mapped[dict[str, Any] | None]
    state: Mapped[Any] = mapped_column(CompressedJSON)
    origin: Mapped[dict[str, Any] | None]
    result: Mapped[str | None] = mapped_column(Text)
    result_json: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    error: Mapped[dict[str, Any] | None]
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    trace_id: Mapped[str] = mapped_column(String(128))
    tenant: Mapped[str | None] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(index=True)  # the retention purge's order
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class PlanStepRow(Base):
    """What happened to one step of a plan run (see `domain.plan.StepRun`)."""

    __tablename__ = "plan_steps"

    run_id: Mapped[str] = mapped_column(ForeignKey("plan_runs.id", ondelete="CASCADE"), primary_key=True)
    step_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent: Mapped[str] = mapped_column(String(128))
    agent_version: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(24))
    execution_id: Mapped[str | None] = mapped_column(String(64))
    output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[dict[str, Any] | None]
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ClarificationRow(Base):
    """A question a plan step asked a human (see `domain.plan.Clarification`)."""

    __tablename__ = "clarifications"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("plan_runs.id", ondelete="CASCADE"), index=True)
    step_id: Mapped[str] = mapped_column(String(64))
    question: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    options: Mapped[list[Any]]
    default: Mapped[str | None] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    answered_by: Mapped[str | None] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), index=True)
    asked_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]


class ScheduleRow(Base):
    """When an agent runs by itself: from its YAML or created through the API (see
    `domain.schedule.Schedule`)."""

    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    cron: Mapped[str | None] = mapped_column(String(128))
    interval_seconds: Mapped[float | None] = mapped_column(Float)
    timezone: Mapped[str] = mapped_column(String(64))
    start_at: Mapped[datetime | None]
    jitter_seconds: Mapped[float] = mapped_column(Float)
    task_data: Mapped[dict[str, Any]]
    timeout_seconds: Mapped[float] = mapped_column(Float)
    misfire_policy: Mapped[str] = mapped_column(String(16))
    misfire_grace_seconds: Mapped[float] = mapped_column(Float)
    overlap_policy: Mapped[str] = mapped_column(String(16))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    origin: Mapped[str] = mapped_column(String(16))
    # The tenant that created it through the API (None: from an agent file).
    tenant: Mapped[str | None] = mapped_column(String(64), index=True)
    # Unused: replicas keep next fire times in memory (runtime/scheduler.py).
    next_fire_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ScheduleFireRow(Base):
    """One tick of a schedule. The unique (schedule_id, scheduled_for) makes each tick
    claimed once across scheduler replicas."""

    __tablename__ = "schedule_fires"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    agent: Mapped[str] = mapped_column(String(128))
    scheduled_for: Mapped[datetime]
    fired_at: Mapped[datetime] = mapped_column(index=True)  # the retention purge's order
    status: Mapped[str] = mapped_column(String(16), index=True)
    note: Mapped[str | None] = mapped_column(Text)
    execution_id: Mapped[str | None] = mapped_column(String(64), index=True)

    __table_args__ = (UniqueConstraint("schedule_id", "scheduled_for", name="uq_schedule_fires_schedule_time"),)


class OutboxRow(Base):
    """An event written in the same transaction as the change that caused it, published
    afterwards (transactional outbox: nothing accepted is lost between DB and broker)."""

    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    topic: Mapped[str] = mapped_column(String(255))
    event: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    published_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_outbox_pending", "published_at", "created_at"),)


class DeadLetterRow(Base):
    """An event that failed every delivery attempt, kept for inspection and replay."""

    __tablename__ = "dead_letters"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    queue: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(255))
    event: Mapped[dict[str, Any]]
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(index=True)  # the retention purge's order
    replayed_at: Mapped[datetime | None]
    tenant: Mapped[str | None] = mapped_column(String(64), index=True)


class AuditRow(Base):
    """Who did what, when: configuration changes, approvals, replays, state edits."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    trace_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]]


class IdempotencyKeyRow(Base):
    """A POST made with an `Idempotency-Key`: the request's fingerprint and, once answered,
    its answer, replayed to a retry of the same request (ARCHITECTURE §9)."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of caller, route and key
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of method, path and body
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    content_type: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(index=True)
    touched_at: Mapped[datetime]  # the request in flight is alive (refreshed while it runs)
    completed_at: Mapped[datetime | None]
    tenant: Mapped[str | None] = mapped_column(String(64), index=True)


class WebhookDeliveryRow(Base):
    """An execution's record on its way to its webhook: attempts so far, next try."""

    __tablename__ = "webhook_deliveries"

    execution_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    attempts: Mapped[list[Any]]
    created_at: Mapped[datetime] = mapped_column(index=True)  # the retention purge's order
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)
    delivered_at: Mapped[datetime | None]
    gave_up_at: Mapped[datetime | None]


class ExecutionStepRow(Base):
    """One step of an execution's agent loop, a model call or a tool call, with its outcome
    (see `domain.steps.Step`): what a re-run replays instead of calling again. Deleted with
    its execution by the retention purge, in the same transaction."""

    __tablename__ = "execution_steps"

    execution_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[Any] = mapped_column(CompressedJSON)  # a completion's text or a tool's result may be large
    replayed: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


# The usage tables live beside (usage_tables.py); imported here so `Base.metadata` has them.
from agentrunner.adapters.state import usage_tables as _usage_tables  # noqa: E402, F401
