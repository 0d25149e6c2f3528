"""A guard that fails a test when agentrunner's code blocks the event loop (blockbuster, as
pydantic-ai and starlette use it): a blocking call (file I/O, `time.sleep`, a blocking
socket, sqlite3, a contended lock, and here also loading CA roots into a TLS context) made
on the loop's thread with an `agentrunner` frame on the stack raises `BlockingError`.

Scoped to agentrunner's frames: the tests' own set-up (writing agent files from an async
test, say) is not what a user's request waits on. The exceptions below are the places
where a library blocks at a known moment that serves no request; each says why."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from blockbuster import BlockBuster, BlockBusterFunction, blockbuster_ctx

SCANNED = ["agentrunner"]

# Loading CA roots reads files and parses every certificate (~25 ms each time): the very
# stall of issue 20 (httpx built one context per MCP client, on the loop, every retry).
TLS_LOADS = ("load_verify_locations", "load_default_certs", "set_default_verify_paths")


@contextmanager
def no_blocking_calls() -> Iterator[BlockBuster]:
    """The guard, armed for the block."""
    with blockbuster_ctx(SCANNED) as guard:
        for name in TLS_LOADS:
            guard.functions[f"ssl.SSLContext.{name}"] = BlockBusterFunction(
                ssl.SSLContext, name, scanned_modules=SCANNED
            ).activate()
        _allow_known_blocks(guard)
        yield guard  # leaving the context deactivates every function, these three too


# (file, function) on the stack under which any blocking call is accepted, and why.
ALLOWED: tuple[tuple[str, str, str], ...] = (
    # The state store's start: Alembic reads its migration scripts and SQLite's folder is
    # made, once, in the lifespan's start-up, before the process serves anything.
    ("agentrunner/adapters/state/engine.py", "start", "start-up, before serving"),
    # ... the migrations themselves run in SQLAlchemy's greenlet, whose stack ends at them.
    ("agentrunner/adapters/state/engine.py", "_upgrade", "start-up, before serving"),
    ("agentrunner/adapters/state/engine.py", "_require_head", "start-up, before serving"),
    ("agentrunner/adapters/state/migrations/env.py", "_run", "migrations"),
    # `agentrunner db upgrade` (and the tests that migrate a database with it): Alembic on
    # a loop of the command's own, which serves nothing.
    ("agentrunner/adapters/state/urls.py", "run_schema_command", "the db command's own loop"),
    # A schedule's time zone is checked by loading it: the tz file is read once per zone and
    # process (zoneinfo caches it), a few KB.
    ("agentrunner/domain/agent.py", "_check_timezone", "once per zone"),
    # Starlette checks that the dashboard's folder exists when the app is built (start-up).
    ("starlette/staticfiles.py", "__init__", "app built at start-up"),
    # ... and the system's mime.types is read then (mimetypes.init), not at the first page.
    ("agentrunner/api/ui.py", "mount_dashboard", "app built at start-up"),
    # FastAPI reads each endpoint's source location once (cached per endpoint, per process).
    ("fastapi/routing.py", "_extract_endpoint_context", "once per endpoint"),
    # prometheus-client reads /proc/self (the kernel's memory, never a disk) on each scrape.
    ("prometheus_client/process_collector.py", "collect", "procfs"),
    # redis-py looks its own version up in the package metadata for each new connection
    # (~1.5 ms; the pool keeps its connections). Passing the version from our adapter
    # would spare it: not done yet.
    ("redis/utils.py", "get_lib_version", "per new Redis connection"),
    # asyncpg looks for ~/.postgresql and ~/.pgpass (passfile, client certificates) with stats
    # for each new connection: a stat or two of the home folder, and the pool keeps its
    # connections, so this runs when one is opened or replaced (after an outage), not per query.
    ("asyncpg/connect_utils.py", "_parse_connect_dsn_and_args", "per new PostgreSQL connection"),
    # The OpenTelemetry resource (host and process attributes, detected in a thread pool it
    # joins) is built once, with the node, before it serves.
    ("agentrunner/adapters/telemetry/otel.py", "__init__", "built with the node, before serving"),
    # The orchestrator's app imports the A2A and MCP servers' SDKs when it is built (the
    # MCP SDK reads its package metadata): once per process, before it serves.
    ("agentrunner/node/apps.py", "_orchestrator_app", "app built at start-up"),
    # A node with Slack imports slack_sdk and aiohttp when it is built (aiohttp makes its
    # default TLS context at import): once per process, before it serves.
    ("agentrunner/node/building.py", "slack_replies", "built with the node, before serving"),
    # An exception's traceback, when logged, shows source lines read from the .py files:
    # once per file (linecache keeps them), on an error path. rich renders it on a
    # terminal (and in tests); the JSON logs of production go through linecache.
    ("rich/traceback.py", "_render_stack", "traceback source lines"),
    ("linecache.py", "updatecache", "traceback source lines"),
)


def _allow_known_blocks(guard: BlockBuster) -> None:
    """Accept blocking under the frames of ALLOWED, and nowhere else."""
    for function in guard.functions.values():
        for filename, name, _why in ALLOWED:
            function.can_block_in(filename, name)
