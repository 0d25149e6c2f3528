"""The Alembic migrations build exactly the models' schema, on SQLite and PostgreSQL,
and the seed's own `alembic` commands work from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.adapters.state.tables import Base
from agentrunner.adapters.state.urls import alembic_config
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
