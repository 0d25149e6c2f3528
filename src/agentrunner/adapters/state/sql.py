"""The SQL state store: SQLite (aiosqlite) for the embedded mode, PostgreSQL (asyncpg) for
the distributed one, one class over one engine.

Each aggregate has its module, a mixin over the shared engine (`engine.py`: the pool,
transactions, driver errors translated): executions with their outbox and usage
(`executions_sql`) and their counts per time bucket (`stats_sql`), sessions, idempotency
keys, webhook deliveries, dead letters, the agent registry and its versions, eval runs,
schedules and fires, plan runs, the journal of execution steps (`steps_sql`), the audit log
and retention. `SQLStateStore` puts them together, so a write that spans aggregates (a
claimed fire and the execution it starts, a plan run and its outbox events) stays one
transaction on one connection.

A new query: a method on its facet's Protocol (`ports/state.py`) and on its aggregate's
mixin here, and the engine that uses it asks for that facet. Only a query of the two
cached facets (executions, sessions) touches `cached.py` too, whose decorator must say
whether it reads through the cache.
"""

from __future__ import annotations

from agentrunner.adapters.state.agent_versions_sql import AgentVersionsSQL
from agentrunner.adapters.state.agents_sql import AgentsSQL
from agentrunner.adapters.state.audit_sql import AuditSQL
from agentrunner.adapters.state.backlog_sql import BacklogSQL
from agentrunner.adapters.state.dead_letters_sql import DeadLettersSQL
from agentrunner.adapters.state.engine import SQLEngine
from agentrunner.adapters.state.evals_sql import EvalRunsSQL
from agentrunner.adapters.state.executions_sql import ExecutionsSQL
from agentrunner.adapters.state.idempotency_sql import IdempotencySQL
from agentrunner.adapters.state.plan_sql import PlanRunsSQL
from agentrunner.adapters.state.retention_sql import RetentionSQL
from agentrunner.adapters.state.schedule_sql import SchedulesSQL
from agentrunner.adapters.state.sessions_sql import SessionsSQL
from agentrunner.adapters.state.stats_sql import StatsSQL
from agentrunner.adapters.state.steps_sql import StepsSQL
from agentrunner.adapters.state.webhooks_sql import WebhookDeliveriesSQL


class SQLStateStore(
    ExecutionsSQL,
    StatsSQL,
    SessionsSQL,
    IdempotencySQL,
    WebhookDeliveriesSQL,
    DeadLettersSQL,
    AgentsSQL,
    AgentVersionsSQL,
    EvalRunsSQL,
    SchedulesSQL,
    PlanRunsSQL,
    StepsSQL,
    AuditSQL,
    RetentionSQL,
    BacklogSQL,
    SQLEngine,
):
    """`ports.state.StateStore` over a SQLAlchemy async engine: every facet of the state
    store, `Retention`, `AuditLog` and `Backlog` (see `SQLEngine` for the constructor and `migrate`)."""
