"""Fixtures shared by every suite: free ports, per-test databases, settings without `.env`."""

from __future__ import annotations

import gc
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURE_AGENTS = Path(__file__).resolve().parent / "fixtures" / "agents"
COMPAT_AGENTS = REPO.parent / "shared" / "compat" / "agents"

# The server scripts/services.sh starts; override for another one.
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres:postgres@127.0.0.1:5432/agentrunner_test"
)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def loopback_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """Serve `handler` on a free loopback port (in a thread) for the block: yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # Polled every 50 ms (not 0.5 s): each stop waits one poll, and the suite stops hundreds.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of this test's own."""
    return f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A PostgreSQL database of this test's own, dropped afterwards."""
    name = f"agentrunner_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No agentrunner setting leaks in from the developer's environment."""
    for key in list(os.environ):
        if key.endswith(("_API_KEY", "_BASE_URL")) or key.startswith(
            ("AWS_", "SLACK_", "DATABASE_", "REDIS_", "RABBITMQ_")
        ):
            monkeypatch.delenv(key, raising=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Collects garbage before a failure is formatted. Python 3.11.7 fails `ast.parse` with
    "SystemError: AST constructor recursion depth mismatch" when a finalizer raising inside
    it is reported, since formatting that traceback parses again (the ^^^ markers); pytest
    parses the failing test's source, so a collection there ended the run in INTERNALERROR.
    A failed constructor leaves such objects (an SDK client whose `__init__` the blocking
    guard stopped halfway, whose `__del__` then raises)."""
    if call.excinfo is not None:
        gc.collect()
    return (yield)
