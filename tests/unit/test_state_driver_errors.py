"""Every exception asyncpg exports, wrapped the way SQLAlchemy wraps it, is either "the
database is not there right now" (a `DependencyUnavailableError`) or left alone, by a
deliberate list (no network)."""

from __future__ import annotations

import inspect
import sqlite3

import asyncpg.exceptions
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection, PGDialect_asyncpg
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from agentrunner.adapters.state.errors import as_outage
from agentrunner.domain.errors import DependencyUnavailableError

# The connection is gone: a new one may work at once.
GONE = {
    "PostgresConnectionError",
    "ClientCannotConnectError",
    "ConnectionDoesNotExistError",
    "ConnectionFailureError",
    "ConnectionRejectionError",
    "ProtocolViolationError",
    "TransactionResolutionUnknownError",
    "AdminShutdownError",
    "CrashShutdownError",
    "CannotConnectNowError",
    "DatabaseDroppedError",
    "IdleSessionTimeoutError",
    "InterfaceError",  # "connection is closed", "connection was closed in the middle of operation"
}
# The server is there but cannot take the work now.
BUSY = {
    "InsufficientResourcesError",
    "TooManyConnectionsError",
    "OutOfMemoryError",
    "DiskFullError",
    "ConfigurationLimitExceededError",
    "QueryCanceledError",
    "PostgresIOError",
}
# Deliberately not outages (a bug of ours, a misconfiguration, or the caller's to handle):
# the other 200-odd SQLSTATE errors need no listing, these near misses do.
NOT_OUTAGES = {
    "OperatorInterventionError",  # 57000 itself: its outage subclasses are listed above
    "PostgresSystemError",
    "UndefinedFileError",
    "DuplicateFileError",
    "FileNameTooLongError",
    "InternalServerError",
    "DataCorruptedError",
    "IndexCorruptedError",
    "ClientConfigurationError",
    "UnsupportedClientFeatureError",
    "UnsupportedServerFeatureError",
    "InternalClientError",
    "OutdatedSchemaCacheError",
    "ProtocolError",
    "TargetServerAttributeNotMatched",
}


def _exported() -> list[type[Exception]]:
    """asyncpg's exported exceptions (its warnings are never raised at us)."""
    classes = (getattr(asyncpg.exceptions, name) for name in asyncpg.exceptions.__all__)
    return [
        cls for cls in classes if inspect.isclass(cls) and issubclass(cls, Exception) and not issubclass(cls, Warning)
    ]


def _as_sqlalchemy_raises_it(error: Exception) -> DBAPIError:
    """`error` translated by SQLAlchemy's asyncpg dialect, then wrapped, as a query sees it."""
    # SQLAlchemy's asyncpg dialect is not annotated (import_dbapi, its constructor).
    dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
    dbapi = PGDialect_asyncpg.import_dbapi()  # type: ignore[no-untyped-call]
    try:
        AsyncAdapt_asyncpg_connection._handle_exception_no_connection(dbapi, error)
    except Exception as adapted:  # the adapted DBAPI error, whatever its class
        wrapped = DBAPIError.instance("SELECT 1", {}, adapted, dbapi.Error, dialect=dialect)
        assert isinstance(wrapped, DBAPIError)
        return wrapped
    raise AssertionError(f"the dialect did not translate {error!r}")


@pytest.mark.parametrize("cls", _exported(), ids=lambda cls: cls.__name__)
def test_every_asyncpg_error_is_an_outage_or_deliberately_not(cls: type[Exception]) -> None:
    translated = as_outage(_as_sqlalchemy_raises_it(cls("boom")), "postgresql://db")
    if cls.__name__ in GONE | BUSY:
        assert translated is not None, cls.__name__
        assert translated.context["reconnect"] is (cls.__name__ in GONE)
        assert "postgresql://db" in translated.message
    else:
        assert translated is None, cls.__name__
        outage_like = getattr(cls, "sqlstate", "") or ""
        # A new error in an outage's SQLSTATE class must be decided on, not fall through.
        if outage_like[:2] in {"08", "53", "57", "58", "XX"} or not issubclass(cls, asyncpg.exceptions.PostgresError):
            assert cls.__name__ in NOT_OUTAGES, f"{cls.__name__} ({outage_like}): an outage or not? list it"


def test_the_starting_up_answer_of_a_restart_is_an_outage() -> None:
    error = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    translated = as_outage(_as_sqlalchemy_raises_it(error), "postgresql://db")
    assert isinstance(translated, DependencyUnavailableError)
    assert translated.message == "database postgresql://db is not reachable: the database system is starting up"


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(104, "reset by peer"),
        TimeoutError(),
        OSError(113, "no route to host"),
        PoolTimeoutError("QueuePool limit of size 10 overflow 20 reached"),
        DisconnectionError("pooled connection is dead"),
        DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
        OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked")),
    ],
    ids=lambda error: type(error).__name__,
)
def test_network_pool_and_sqlite_failures_are_outages(error: Exception) -> None:
    assert isinstance(as_outage(error, "db"), DependencyUnavailableError)


@pytest.mark.parametrize(
    "error",
    [
        IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")),
        ValueError("not a driver error"),
        DBAPIError("SELECT 1", {}, Exception("syntax"), connection_invalidated=False),
    ],
    ids=lambda error: type(error).__name__,
)
def test_conflicts_and_bugs_are_left_alone(error: Exception) -> None:
    assert as_outage(error, "db") is None
