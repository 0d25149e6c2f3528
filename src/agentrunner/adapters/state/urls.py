"""Database URLs: where the schema lives and how Alembic finds it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from agentrunner.domain.errors import ConfigError, DependencyUnavailableError
from agentrunner.domain.redaction import mask_url

if TYPE_CHECKING:
    # Alembic is imported where a migration runs, not at every start (`migrations.HEAD`).
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def prepare_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite database file (DATA_DIR) when it is missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return
    folder = Path(parsed.database).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the SQLite folder {folder} (DATA_DIR): {exc}") from exc


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for agentrunner's migrations; `url` defaults to the settings'."""
    from alembic.config import Config  # noqa: PLC0415 - see the imports

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def run_schema_command(url: str, action: str, revision: str = "head") -> None:
    """`upgrade`, `downgrade` or `current` (printed) on the database at `url`; raises
    `DependencyUnavailableError` naming the database (password hidden) when it fails."""
    from alembic import command  # noqa: PLC0415 - see the imports

    config = alembic_config(url)
    actions = {
        "upgrade": lambda: command.upgrade(config, revision),
        "downgrade": lambda: command.downgrade(config, revision),
        "current": lambda: command.current(config),
    }
    try:
        actions[action]()
    except (SQLAlchemyError, OSError) as exc:
        raise DependencyUnavailableError(f"db {action} failed on {mask_url(url)}: {exc}") from exc


def database_url_for_alembic(config: Config) -> str:
    """The URL Alembic was given, else DATABASE_URL from agentrunner's settings."""
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from agentrunner.settings import Settings  # noqa: PLC0415 - only the plain `alembic` command needs it

    return Settings().effective_database_url
