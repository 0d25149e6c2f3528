"""Driver errors of the state store become ours here, and nowhere else.

    what the driver raised                                   what we raise
    asyncpg SQLSTATE class 08 (connection exception),        DependencyUnavailableError
      57P01-57P05 (admin/crash shutdown, cannot connect        reconnect=True: the connection
      now, database dropped, idle session timeout),            is gone; a new one may work
      SQLAlchemy InterfaceError (connection closed),
      DBAPIError.connection_invalidated, DisconnectionError,
      OSError (refused, reset, DNS, connect timeout),
      SQLAlchemy's pool TimeoutError, SQLite OperationalError
      (locked, busy, I/O)
    SQLSTATE class 53 (too many connections, out of memory,  DependencyUnavailableError
      disk full), 57014 (statement timeout, cancel), 58030     reconnect=False: the server is
      (I/O error)                                              there but cannot take the work
    IntegrityError, anything else                            unchanged: the caller's to handle
                                                             (a conflict), or a bug (500)

SQLAlchemy wraps asyncpg's errors in its own classes by the driver's class, not its
meaning (a "the database system is starting up" is a plain `DBAPIError`), so the SQLSTATE
the driver reported decides. `tests/unit/test_state_driver_errors.py` walks every exception
asyncpg exports and checks which of them mean "not there right now".
"""

from __future__ import annotations

from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from agentrunner.domain.errors import DependencyUnavailableError

# SQLSTATE classes and codes that mean the database cannot serve now, a later try may work.
_GONE_CLASSES = ("08",)  # connection exception
_GONE_CODES = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05"})  # shutdown, starting up, dropped
_BUSY_CLASSES = ("53",)  # insufficient resources: too many connections, out of memory, disk full
_BUSY_CODES = frozenset({"57014", "58030"})  # statement timeout / cancelled, I/O error

# asyncpg errors raised as an InterfaceError that are the caller's mistake, not an outage.
_MISUSE = frozenset({"ClientConfigurationError", "UnsupportedClientFeatureError", "UnsupportedServerFeatureError"})


def as_outage(exc: BaseException, where: str) -> DependencyUnavailableError | None:
    """`exc` as a `DependencyUnavailableError` (for the caller to raise `from exc`) when it
    means the database at `where` is not there right now; None when it means anything else.
    The error's `reconnect` context says whether a new connection may succeed at once."""
    reconnect = _unavailable(exc)
    if reconnect is None:
        return None
    message = f"database {where} is not answering: {_first_line(exc)}"
    return DependencyUnavailableError(message, reconnect=reconnect)


def _unavailable(exc: BaseException) -> bool | None:
    """True: the connection is gone; False: the server cannot take the work; None: no outage."""
    if isinstance(exc, IntegrityError):
        return None
    if isinstance(exc, DisconnectionError | PoolTimeoutError | OSError):
        return True  # OSError: refused, reset, unreachable, connect timeout (TimeoutError)
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate:
        if sqlstate.startswith(_GONE_CLASSES) or sqlstate in _GONE_CODES:
            return True
        if sqlstate.startswith(_BUSY_CLASSES) or sqlstate in _BUSY_CODES:
            return False
        return None
    if isinstance(exc, InterfaceError):
        driver_error = exc.orig.__cause__ if exc.orig is not None else None
        return None if type(driver_error).__name__ in _MISUSE else True
    if isinstance(exc, OperationalError):
        return True  # SQLite: locked, busy, disk I/O; psycopg: the server went away
    return None


def _first_line(exc: BaseException) -> str:
    """The driver's message without SQLAlchemy's statement and background-link lines."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc) or type(exc).__name__
    return text.strip().splitlines()[0]
