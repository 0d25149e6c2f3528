"""`migrations.HEAD`, the revision every process compares the database's with at start
(without importing Alembic), is the newest migration script's."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from agentrunner.adapters.state.migrations import HEAD
from agentrunner.adapters.state.urls import alembic_config


def test_the_known_head_is_the_newest_migration() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()

    assert heads == [HEAD], f"a migration was added: set migrations.HEAD to {heads}"
