"""Alembic environment: the URL comes from the caller (`agentrunner db`, the state store)
or, for the plain `alembic` command, from agentrunner's settings (DATABASE_URL / .env)."""

from __future__ import annotations

import asyncio
from typing import Literal

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from agentrunner.adapters.state.tables import Base, CompressedJSON, UTCDateTime
from agentrunner.adapters.state.urls import database_url_for_alembic, prepare_sqlite_folder

config = context.config
target_metadata = Base.metadata


def _render_item(kind: str, item: object, _: object) -> str | Literal[False]:
    # Migrations are snapshots: write our column types as the plain types they store, so
    # a later change to tables.py never rewrites an old migration.
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if kind == "type" and isinstance(item, CompressedJSON):
        return "sa.LargeBinary()"
    return False


def _configure(**kwargs: object) -> None:
    # Batch mode lets ALTERs run on SQLite (copy-and-move); PostgreSQL alters in place.
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        render_item=_render_item,
        **kwargs,  # type: ignore[arg-type]
    )


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    prepare_sqlite_folder(url)
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def main() -> None:
    """Run the migrations Alembic asked for, on the connection it was given or a new one."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    elif context.is_offline_mode():
        _configure(url=database_url_for_alembic(config), literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(_run_async(database_url_for_alembic(config)))


main()
