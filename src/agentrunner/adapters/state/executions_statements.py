"""The statements of executions in SQL, built once (building a statement per call cost
more than running it): an execution's INSERT and UPDATE, as one statement with its outbox
rows and steps on PostgreSQL, its start, the outbox's marks; and SQLite's lean writes, run
on its thread in one trip (`sqlite_hop`)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Insert,
    String,
    Table,
    Update,
    any_,
    bindparam,
    exists,
    func,
    insert,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql

from agentrunner.adapters.state import sqlite_hop
from agentrunner.adapters.state.rows import execution_values
from agentrunner.adapters.state.steps_sql import STEP_COLUMNS, STEP_KEY, STEPS, step_upsert
from agentrunner.adapters.state.tables import ExecutionRow, OutboxRow
from agentrunner.domain.event import Event
from agentrunner.domain.execution import Execution, ExecutionStatus, utcnow
from agentrunner.domain.steps import Step
from agentrunner.ports.state import IdempotencyClaim

EXECUTIONS = cast("Table", ExecutionRow.__table__)
OUTBOX = cast("Table", OutboxRow.__table__)


# An execution's own columns; the idempotency key of the invocation that started it is
# written once, with it (`execution_params`), and never updated.
_KEY_COLUMNS = ("idempotency_key", "idempotency_fingerprint")
EXECUTION_COLUMNS = tuple(column.name for column in EXECUTIONS.columns if column.name not in _KEY_COLUMNS)
Create = tuple[Execution, Sequence[Event], IdempotencyClaim | None, Sequence[Step]]


def execution_params(execution: Execution, *claim: IdempotencyClaim | None) -> dict[str, Any]:
    """The `v_<column>` parameters of an execution's row; with `claim` (even None), of a
    new one, with the key of the invocation that started it."""
    params = {f"v_{column}": value for column, value in execution_values(execution).items()}
    if claim:
        key = claim[0]
        params["v_idempotency_key"] = key.key if key else None
        params["v_idempotency_fingerprint"] = key.fingerprint if key else None
    return params


OUTBOX_COLUMNS = ("id", "topic", "event", "created_at")


@functools.cache
def execution_statement(new: bool, only_if: frozenset[ExecutionStatus] | None) -> Insert | Update:
    """INSERT of a whole execution row, or UPDATE of one by id (while its status is one of
    `only_if`), with `v_<column>` parameters."""
    values: dict[str, Any] = {c: bindparam(f"v_{c}") for c in EXECUTION_COLUMNS if c != "execution_id"}
    if new:
        keyed: dict[str, Any] = {c: bindparam(f"v_{c}") for c in _KEY_COLUMNS}
        return insert(EXECUTIONS).values(execution_id=bindparam("v_execution_id"), **values, **keyed)
    query = update(EXECUTIONS).where(EXECUTIONS.c.execution_id == bindparam("v_execution_id")).values(**values)
    if only_if is not None:  # constants, so the compiled statement is reused as it is
        query = query.where(EXECUTIONS.c.status.in_([literal_column(f"'{s.value}'") for s in sorted(only_if)]))
    return query


@functools.cache
def execution_statement_with_outbox(
    new: bool, only_if: frozenset[ExecutionStatus] | None, events: int, steps: int = 0
) -> Insert:
    """`execution_statement` as a CTE, and `events` outbox rows (`o<i>_<column>`
    parameters) inserted only when it changed a row, and `steps` journal steps
    (`s<i>_<column>`, upserted by their key as `StepJournal.record_step` does) too: one
    atomic statement (PostgreSQL)."""
    change = execution_statement(new, only_if).returning(EXECUTIONS.c.execution_id).cte("change")
    changed = exists(select(change.c.execution_id))
    outbox = _rows("o", OUTBOX, OUTBOX_COLUMNS, events, changed)
    statement = insert(OUTBOX).from_select(list(OUTBOX_COLUMNS), outbox).add_cte(change)
    if steps:
        upsert = postgresql.insert(STEPS).from_select(
            list(STEP_COLUMNS), _rows("s", STEPS, STEP_COLUMNS, steps, changed)
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=[STEPS.c[c] for c in STEP_KEY],
            set_={c: upsert.excluded[c] for c in STEP_COLUMNS if c not in STEP_KEY},
        )
        statement = statement.add_cte(upsert.cte("steps"))
    return statement


def _rows(prefix: str, table: Table, columns: Sequence[str], count: int, changed: Any) -> Any:
    """`count` rows of `<prefix><i>_<column>` parameters, selected only when `changed`."""
    rows = [
        select(*(bindparam(f"{prefix}{i}_{c}", type_=table.c[c].type) for c in columns)).where(changed)
        for i in range(count)
    ]
    return rows[0] if count == 1 else union_all(*rows)


STARTABLE = frozenset({ExecutionStatus.QUEUED, ExecutionStatus.RUNNING})
START_EXECUTION = (
    update(EXECUTIONS)
    .where(
        EXECUTIONS.c.execution_id == bindparam("v_execution_id"),
        EXECUTIONS.c.status.in_([literal_column(f"'{s.value}'") for s in sorted(STARTABLE)]),
    )
    .values(
        status=ExecutionStatus.RUNNING.value,
        attempts=EXECUTIONS.c.attempts + 1,
        started_at=func.coalesce(EXECUTIONS.c.started_at, bindparam("v_now", type_=EXECUTIONS.c.started_at.type)),
        worker=bindparam("v_worker"),
        provider=bindparam("v_provider"),
        model=bindparam("v_model"),
    )
    .returning(*EXECUTIONS.c)
)


# Marking events published, built once: building the statement per call cost more than
# running it. On PostgreSQL `= ANY(array)`, so the SQL text is the same whatever the number
# of ids (one prepared statement, not one per batch size); SQLite has no arrays: one row
# per id, all in one trip (`sqlite_hop`).
MARK_PUBLISHED_ANY = (
    update(OUTBOX)
    .where(OUTBOX.c.id == any_(bindparam("ids", type_=postgresql.ARRAY(String))), OUTBOX.c.published_at.is_(None))
    .values(published_at=bindparam("now", type_=OUTBOX.c.published_at.type))
)
MARK_ONE_PUBLISHED = (
    update(OUTBOX)
    .where(OUTBOX.c.id == bindparam("v_id"), OUTBOX.c.published_at.is_(None))
    .values(published_at=bindparam("v_now", type_=OUTBOX.c.published_at.type))
)
INSERT_OUTBOX = insert(OUTBOX).values({c: bindparam(c, type_=OUTBOX.c[c].type) for c in OUTBOX_COLUMNS})


def outbox_rows(events: Sequence[Event]) -> list[dict[str, Any]]:
    now = utcnow()
    return [{"id": e.event_id, "topic": e.topic, "event": e.model_dump(mode="json"), "created_at": now} for e in events]


def create_on_sqlite(
    rows: list[dict[str, Any]], outbox: list[dict[str, Any]], journal: list[dict[str, Any]], tx: sqlite_hop.Transaction
) -> None:
    """On SQLite's thread: new executions with their outbox rows and steps (`_create_many`)."""
    tx.many(execution_statement(True, None), rows)
    tx.many(INSERT_OUTBOX, outbox)
    tx.many(step_upsert(True), journal)


@dataclass(slots=True)
class Save:
    """An execution's update on SQLite (`save_on_sqlite`), and the rows it changed once
    written (set by the group commit that wrote it)."""

    statement: Update | Insert
    row: dict[str, Any]
    outbox: list[dict[str, Any]]
    journal: list[dict[str, Any]]
    changed: int = 0


def save_on_sqlite(saves: Sequence[Save], tx: sqlite_hop.Transaction) -> None:
    """On SQLite's thread: executions' updates and, for each that changed its row, its
    outbox rows and steps (`_write_execution`), in order."""
    for save in saves:
        save.changed = tx.rowcount(save.statement, save.row)
        if save.changed:
            tx.many(INSERT_OUTBOX, save.outbox)
            tx.many(step_upsert(True), save.journal)


@dataclass(slots=True)
class Start:
    """An execution's start on SQLite, and its row once started (None: not startable)."""

    params: dict[str, Any]
    started: Any | None = None


def start_on_sqlite(starts: Sequence[Start], tx: sqlite_hop.Transaction) -> None:
    """On SQLite's thread: executions' starts, in order."""
    for start in starts:
        start.started = tx.first(START_EXECUTION, start.params)
