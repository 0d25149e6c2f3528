"""The Alembic migrations build exactly the models' schema, on SQLite and PostgreSQL,
and the seed's own `alembic` commands work from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, MetaData, Table, insert, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from agentrunner.adapters.state.rows import execution_values
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.adapters.state.tables import Base, ExecutionRow
from agentrunner.adapters.state.urls import alembic_config
from agentrunner.domain.execution import Execution, ExecutionStatus, Usage
from agentrunner.domain.redaction import MASK
from tests.conftest import REPO

EXPECTED_TABLES = {
    "agents",
    "agent_versions",
    "eval_runs",
    "executions",
    "webhook_deliveries",
    "idempotency_keys",
    "agent_state",
    "plan_runs",
    "plan_steps",
    "clarifications",
    "schedules",
    "schedule_fires",
    "outbox",
    "dead_letters",
    "audit_log",
    "usage_rollup",
    "usage_hourly",
    "usage_daily",
    "execution_steps",
}


async def _on(url: str, work: Any) -> Any:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


def _migrate(revision: str, *, down: bool = False) -> Any:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    return run


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _differences(connection: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata))


async def test_upgrade_to_head_creates_every_table_and_matches_the_models(empty_database_url: str) -> None:
    database_url = empty_database_url
    assert await _on(database_url, _tables) == set()  # where a new deployment starts

    await _on(database_url, _migrate("head"))

    assert await _on(database_url, _tables) == EXPECTED_TABLES
    assert await _on(database_url, _differences) == []


async def test_downgrade_to_base_removes_every_table_and_upgrade_works_again(empty_database_url: str) -> None:
    database_url = empty_database_url
    assert await _on(database_url, _tables) == set()

    await _on(database_url, _migrate("head"))
    await _on(database_url, _migrate("base", down=True))

    assert await _on(database_url, _tables) == set()
    await _on(database_url, _migrate("head"))
    assert await _on(database_url, _tables) == EXPECTED_TABLES


async def test_a_store_upgrades_a_database_one_migration_behind_and_skips_one_at_head(empty_database_url: str) -> None:
    head = _head()
    await _on(empty_database_url, _migrate(str(head.down_revision)))

    for _ in range(2):  # behind, then at head: the start's shortcut must tell them apart
        store = SQLStateStore(empty_database_url)
        await store.start()
        await store.close()
        assert await _on(empty_database_url, _revision) == head.revision
    assert await _on(empty_database_url, _differences) == []


async def test_the_usage_migration_counts_the_ended_executions_and_the_purged_ones_and_gives_them_back(
    empty_database_url: str,
) -> None:
    buckets = ScriptDirectory.from_config(alembic_config()).get_revision("0020")
    assert buckets is not None
    before = str(buckets.down_revision)  # wherever the chain puts 0020
    await _on(empty_database_url, _migrate(before))
    hour = datetime(2026, 3, 14, 9, tzinfo=UTC)
    executions = [
        Execution(
            execution_id=f"e{i}",
            agent="writer",
            status=status,
            tenant=tenant,
            usage=Usage(input_tokens=10, output_tokens=i),
            cost_usd=0.25 if i % 2 else None,
            trace_id="t",
            created_at=hour + timedelta(minutes=7 * i),
        )
        for i, (status, tenant) in enumerate(
            [(s, t) for s in ExecutionStatus for t in ("acme", None)]  # every status, with and without a tenant
        )
    ]
    purged = {"agent": "writer", "tenant": "acme", "hour": hour, "executions": 3, "input_tokens": 30}
    purged |= {"output_tokens": 3, "cost_usd": 0.5}

    def fill(connection: Connection) -> None:
        connection.execute(insert(cast("Table", ExecutionRow.__table__)), [execution_values(e) for e in executions])
        rollup = Table("usage_rollup", MetaData(), autoload_with=connection)
        connection.execute(
            insert(rollup).values(purged | {"hour": hour.replace(tzinfo=None) if _lite(connection) else hour})
        )

    await _on(empty_database_url, fill)
    await _on(empty_database_url, _migrate("head"))

    def bucketed(connection: Connection) -> list[Any]:
        return [
            connection.exec_driver_sql(f"SELECT sum(executions) FROM {t}").scalar()
            for t in ("usage_hourly", "usage_daily")
        ]

    assert await _on(empty_database_url, bucketed) == [11, 11]  # the 8 ended and the 3 purged
    store = SQLStateStore(empty_database_url)
    await store.start()
    try:
        usage = await store.usage()
        acme = await store.usage(tenant="acme", since=hour, until=hour + timedelta(days=1))
    finally:
        await store.close()
    assert (usage.executions, usage.input_tokens, usage.output_tokens) == (17, 170, 94)
    assert usage.cost_usd == 0.5 + 0.25 * 7
    assert (acme.executions, acme.input_tokens, acme.cost_usd) == (10, 100, 0.5)  # its own have no cost

    await _on(empty_database_url, _migrate(before, down=True))

    def rollup(connection: Connection) -> list[Any]:
        return list(
            connection.exec_driver_sql("SELECT agent, tenant, executions, input_tokens, cost_usd FROM usage_rollup")
        )

    assert [tuple(row) for row in await _on(empty_database_url, rollup)] == [("writer", "acme", 3, 30, 0.5)]


def _lite(connection: Connection) -> bool:
    return connection.dialect.name == "sqlite"


def test_the_seed_alembic_commands_work_from_the_repository_root(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'seed.db'}"
    alembic = [sys.executable, "-m", "alembic"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*alembic, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
        )

    upgraded = run("upgrade", "head")
    current = run("current")
    downgraded = run("downgrade", "-1")
    after = run("current")

    assert upgraded.returncode == 0, upgraded.stderr
    head = _head()
    assert f"{head.revision} (head)" in current.stdout
    assert downgraded.returncode == 0, downgraded.stderr
    assert str(head.down_revision) in after.stdout
    assert head.revision not in after.stdout
    assert (tmp_path / "nested" / "seed.db").is_file()


def test_agentrunner_db_commands_upgrade_report_and_downgrade(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"

    def db(*args: str) -> subprocess.CompletedProcess[str]:
        cli = [sys.executable, "-m", "agentrunner", "db", *args]
        return subprocess.run(cli, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)

    upgraded, current, downgraded = db("upgrade"), db("current"), db("downgrade", "base")

    assert upgraded.returncode == 0, upgraded.stderr
    assert f"{_head().revision} (head)" in current.stdout
    assert downgraded.returncode == 0, downgraded.stderr


def test_agentrunner_db_upgrade_names_an_unreachable_database_without_its_password(tmp_path: Path) -> None:
    env = dict(os.environ, DATABASE_URL="postgresql+asyncpg://postgres:hunter2@127.0.0.1:1/nowhere")

    result = subprocess.run(
        [sys.executable, "-m", "agentrunner", "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1
    assert f"db upgrade failed on postgresql+asyncpg://postgres:{MASK}@127.0.0.1:1/nowhere" in result.stderr.replace(
        "\n", ""
    )
    assert "hunter2" not in result.stderr


def _head() -> Script:
    """The newest migration (its revision and the one before)."""
    scripts = ScriptDirectory.from_config(alembic_config())
    current = scripts.get_current_head()
    assert current is not None, "the migrations have a head"
    head = scripts.get_revision(current)
    assert head is not None
    return head
