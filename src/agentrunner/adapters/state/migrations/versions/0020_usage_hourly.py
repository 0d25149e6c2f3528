"""Usage pre-aggregated: `usage_hourly` and `usage_daily` hold the executions, tokens and
cost of every ended execution per agent, tenant and hour (day) of creation, kept by
triggers on `executions` in the transaction (the statement) that writes the row, so they
are exact and never lag: an execution counts when a write makes it terminal, its old
values are taken back when a write changes a terminal row (or makes it unfinished again),
and a write that changes nothing counted (a redelivered end refused, a second save of the
same end) fires nothing. Deleting an execution (the retention purge) leaves its usage:
history outlives the rows. `GET /usage` reads whole days and hours from here, the live rows
for the rest (adapters/state/usage_sql.py).

On PostgreSQL a bucket may have several rows (slots): an end adds to the first row of its
bucket that no other transaction holds (`FOR UPDATE SKIP LOCKED`), or makes a new one, so
ends of one agent and tenant at once do not wait on each other's commit; the reads sum the
slots. SQLite has one writer: one row per bucket.

Triggers rather than statements in the code: every writer of an execution (create, the
grouped creates, the end, a schedule's fire, a cancel, a test) is covered by one
definition that sees the row before and after the write.

The old `usage_rollup` (usage of purged executions) is folded in, then no longer written
or read; it stays, so the migration only adds and processes of the previous version keep
working during an upgrade (operations.md); a later migration drops it. The upgrade creates
the triggers before the backfill, in one transaction on PostgreSQL: the trigger's lock on
`executions` holds writers off until the backfill commits, so none is missed or counted
twice.

Revision ID: 0020
Revises: 0023
Create Date: 2026-12-07 06:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The terminal statuses as of this revision (tests/contract/test_usage.py checks they are
# still the domain's: a new terminal status needs a migration that redefines the triggers).
TERMINAL = "('succeeded', 'failed', 'timed_out', 'cancelled')"
# (table, bucket column, PostgreSQL date_trunc field, SQLite strftime format)
BUCKETS = [
    ("usage_hourly", "hour", "hour", "%Y-%m-%d %H:00:00.000000"),
    ("usage_daily", "day", "day", "%Y-%m-%d 00:00:00.000000"),
]
COUNTED = ("executions", "input_tokens", "output_tokens", "cost_usd", "priced")
# Rows a bucket may take on PostgreSQL when ends of its agent and tenant come at once.
SLOTS = 16
# usage_add_<table>'s: agent, tenant, bucket, then the counted values (executions, tokens in and
# out, cost, priced).
ADD_ARGUMENTS = "text, text, timestamptz, bigint, bigint, bigint, double precision, bigint"
# What a write must change for the usage to change (or the row is not terminal: nothing counted).
WATCHED = ("status", "agent", "tenant", "created_at", "input_tokens", "output_tokens", "cost_usd")


def upgrade() -> None:
    counter = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    for table, bucket, _, _ in BUCKETS:
        op.create_table(
            table,
            sa.Column("agent", sa.String(length=128), nullable=False),
            sa.Column("tenant", sa.String(length=64), nullable=False),
            sa.Column(bucket, sa.DateTime(timezone=True), nullable=False),
            sa.Column("slot", sa.SmallInteger(), server_default="0", nullable=False),
            sa.Column("executions", counter, nullable=False),
            sa.Column("input_tokens", counter, nullable=False),
            sa.Column("output_tokens", counter, nullable=False),
            sa.Column("cost_usd", sa.Float(), nullable=False),
            sa.Column("priced", counter, nullable=False),
            sa.PrimaryKeyConstraint("agent", "tenant", bucket, "slot", name=op.f(f"pk_{table}")),
        )
        op.create_index(op.f(f"ix_{table}_{bucket}"), table, [bucket])
        op.create_index(op.f(f"ix_{table}_tenant"), table, ["tenant", bucket])
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in _sqlite_triggers() if sqlite else _postgresql_triggers():
        op.execute(statement)
    _backfill(sqlite)


def _upsert(table: str, bucket: str, values: str) -> str:
    """INSERT of one signed contribution `values` (a SELECT or VALUES), added to its bucket's row."""
    added = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in COUNTED)
    return (
        f"INSERT INTO {table} (agent, tenant, {bucket}, {', '.join(COUNTED)}) {values} "
        f"ON CONFLICT (agent, tenant, {bucket}, slot) DO UPDATE SET {added}"
    )


def _add_function(table: str, bucket: str) -> str:
    """`usage_add_<table>(...)`: add one signed contribution to a row of its bucket that no
    other transaction holds, so the ends of one agent and tenant at once take different rows
    (slots, summed on reading) instead of each waiting for the other's commit; a new slot
    when all are held, up to SLOTS; past that, wait for slot 0."""
    key = f"agent = a AND tenant = t AND {bucket} = b"
    added = ", ".join(f"{c} = {c} + {v}" for c, v in zip(COUNTED, "niocp", strict=True))  # the arguments
    values = "(a, t, b, {slot}, n, i, o, c, p)"
    columns = f"(agent, tenant, {bucket}, slot, {', '.join(COUNTED)})"
    arguments = ", ".join(f"{name} {kind}" for name, kind in zip("atbniocp", ADD_ARGUMENTS.split(", "), strict=True))
    return f"""CREATE FUNCTION usage_add_{table}({arguments}) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    free integer;
BEGIN
    FOR attempt IN 1..3 LOOP
        UPDATE {table} SET {added}
        WHERE {key} AND slot = (SELECT slot FROM {table} WHERE {key} ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED);
        IF FOUND THEN
            RETURN;
        END IF;
        SELECT coalesce(max(slot) + 1, 0) INTO free FROM {table} WHERE {key};
        EXIT WHEN free >= {SLOTS};
        INSERT INTO {table} {columns} VALUES {values.format(slot="free")} ON CONFLICT DO NOTHING;
        IF FOUND THEN
            RETURN;
        END IF;
    END LOOP;
    INSERT INTO {table} {columns} VALUES {values.format(slot=0)}
    ON CONFLICT (agent, tenant, {bucket}, slot) DO UPDATE SET {added.replace(" = ", f" = {table}.")};
END
$$"""  # noqa: S608 - built of constants


def _postgresql_triggers() -> list[str]:
    def add(row: str, sign: str) -> str:
        return ";\n        ".join(
            f"PERFORM usage_add_{table}({row}.agent, coalesce({row}.tenant, ''), "
            f"date_trunc('{field}', {row}.created_at, 'UTC'), {sign}1, {sign}{row}.input_tokens, "
            f"{sign}{row}.output_tokens, {sign}coalesce({row}.cost_usd, 0), "
            f"CASE WHEN {row}.cost_usd IS NULL THEN 0 ELSE {sign}1 END)"
            for table, _, field, _ in BUCKETS
        )

    changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in WATCHED)
    return [
        *(_add_function(table, bucket) for table, bucket, _, _ in BUCKETS),
        f"""CREATE FUNCTION usage_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status IN {TERMINAL} THEN
        {add("OLD", "-")};
    END IF;
    IF NEW.status IN {TERMINAL} THEN
        {add("NEW", "")};
    END IF;
    RETURN NULL;
END
$$""",
        "CREATE TRIGGER usage_count_insert AFTER INSERT ON executions FOR EACH ROW "
        f"WHEN (NEW.status IN {TERMINAL}) EXECUTE FUNCTION usage_count()",
        "CREATE TRIGGER usage_count_update AFTER UPDATE ON executions FOR EACH ROW "
        f"WHEN ((OLD.status IN {TERMINAL} OR NEW.status IN {TERMINAL}) AND ({changed})) "
        "EXECUTE FUNCTION usage_count()",
    ]


def _sqlite_triggers() -> list[str]:
    def add(row: str, sign: str) -> str:
        return "".join(
            _upsert(
                table,
                bucket,
                f"SELECT {row}.agent, coalesce({row}.tenant, ''), strftime('{fmt}', {row}.created_at), "
                f"{sign}1, {sign}{row}.input_tokens, {sign}{row}.output_tokens, {sign}coalesce({row}.cost_usd, 0), "
                f"CASE WHEN {row}.cost_usd IS NULL THEN 0 ELSE {sign}1 END WHERE {row}.status IN {TERMINAL}",
            )
            + ";\n"
            for table, bucket, _, fmt in BUCKETS
        )

    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in WATCHED)
    return [
        f"CREATE TRIGGER usage_count_insert AFTER INSERT ON executions WHEN NEW.status IN {TERMINAL} "
        f"BEGIN\n{add('NEW', '')}END",
        "CREATE TRIGGER usage_count_update AFTER UPDATE ON executions "
        f"WHEN (OLD.status IN {TERMINAL} OR NEW.status IN {TERMINAL}) AND ({changed}) "
        f"BEGIN\n{add('OLD', '-')}{add('NEW', '')}END",
    ]


def _backfill(sqlite: bool) -> None:
    """The ended executions and the usage of those already purged (`usage_rollup`, whose cost
    is a sum without a count: `priced` is then its executions, which is > 0 exactly when
    the cost is known, all `/usage` asks of it)."""
    hour = "strftime('%Y-%m-%d %H:00:00.000000', created_at)" if sqlite else "date_trunc('hour', created_at, 'UTC')"
    op.execute(
        f"""INSERT INTO usage_hourly (agent, tenant, hour, {", ".join(COUNTED)})
SELECT agent, tenant, hour, sum(executions), sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(priced)
FROM (
    SELECT agent, coalesce(tenant, '') AS tenant, {hour} AS hour, count(*) AS executions,
           sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
           coalesce(sum(cost_usd), 0) AS cost_usd, count(cost_usd) AS priced
    FROM executions WHERE status IN {TERMINAL} GROUP BY 1, 2, 3
    UNION ALL
    SELECT agent, tenant, hour, executions, input_tokens, output_tokens, coalesce(cost_usd, 0),
           CASE WHEN cost_usd IS NULL THEN 0 ELSE executions END
    FROM usage_rollup
) AS counted GROUP BY agent, tenant, hour"""  # noqa: S608 - built of constants
    )
    day = "strftime('%Y-%m-%d 00:00:00.000000', hour)" if sqlite else "date_trunc('day', hour, 'UTC')"
    op.execute(
        f"""INSERT INTO usage_daily (agent, tenant, day, {", ".join(COUNTED)})
SELECT agent, tenant, {day}, sum(executions), sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(priced)
FROM usage_hourly GROUP BY 1, 2, 3"""  # noqa: S608 - built of constants
    )


def downgrade() -> None:
    op.execute("DELETE FROM usage_rollup")  # written again below, whatever wrote it meanwhile
    sqlite = op.get_bind().dialect.name == "sqlite"
    hour = "strftime('%Y-%m-%d %H:00:00.000000', created_at)" if sqlite else "date_trunc('hour', created_at, 'UTC')"
    # What the purge rolled up: the hours' usage less the ended executions still stored.
    op.execute(
        f"""INSERT INTO usage_rollup (agent, tenant, hour, executions, input_tokens, output_tokens, cost_usd)
SELECT u.agent, u.tenant, u.hour, u.executions - coalesce(l.executions, 0),
       u.input_tokens - coalesce(l.input_tokens, 0), u.output_tokens - coalesce(l.output_tokens, 0),
       CASE WHEN u.priced - coalesce(l.priced, 0) > 0 THEN u.cost_usd - coalesce(l.cost_usd, 0) END
FROM (
    SELECT agent, tenant, hour, sum(executions) AS executions, sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd, sum(priced) AS priced
    FROM usage_hourly GROUP BY agent, tenant, hour
) AS u LEFT JOIN (
    SELECT agent, coalesce(tenant, '') AS tenant, {hour} AS hour, count(*) AS executions,
           sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
           coalesce(sum(cost_usd), 0) AS cost_usd, count(cost_usd) AS priced
    FROM executions WHERE status IN {TERMINAL} GROUP BY 1, 2, 3
) AS l ON l.agent = u.agent AND l.tenant = u.tenant AND l.hour = u.hour
WHERE u.executions - coalesce(l.executions, 0) > 0"""  # noqa: S608 - built of constants
    )
    op.execute("DROP TRIGGER usage_count_update" + ("" if sqlite else " ON executions"))
    op.execute("DROP TRIGGER usage_count_insert" + ("" if sqlite else " ON executions"))
    if not sqlite:
        op.execute("DROP FUNCTION usage_count()")
        for table, _, _, _ in BUCKETS:
            op.execute(f"DROP FUNCTION usage_add_{table}({ADD_ARGUMENTS})")
    for table, bucket, _, _ in reversed(BUCKETS):
        op.drop_index(op.f(f"ix_{table}_tenant"), table_name=table)
        op.drop_index(op.f(f"ix_{table}_{bucket}"), table_name=table)
        op.drop_table(table)
