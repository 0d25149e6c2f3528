"""The HTTP face of the Celery peer of bench/peers.py: each job is
`echo.delay(task_data).get(...)` of bench/celery_peer.py, on a thread (Celery's client
blocks), as a web application calling Celery does. The worker is a `celery worker` process
that bench/peers.py starts with the same BENCH_CELERY_* variables.

Run in the `celery` virtualenv: python bench/peer_apps/celery_app.py --port P
"""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from bench.celery_peer import echo
from bench.peer_apps._http import serve

CALL_TIMEOUT = 30.0
# The database result backend has no push: `get` polls. Every 5 ms keeps its latency near
# the Redis backend's (which is told by pub/sub and ignores the interval) at the cost of
# queries, which the CPU count includes.
POLL_INTERVAL = 0.005


def pool_result_connections() -> None:
    """Celery's database result backend opens a new PostgreSQL connection for every poll
    in a process it did not fork (a NullPool engine; its worker's pool processes keep an
    engine). Marked as forked, this client keeps a pooled engine too: the peer's best
    setting, and a backend that lives through the phase, so its CPU is counted (a
    connection that closes takes its backend's CPU out of the count)."""
    echo.app.conf.database_engine_options = {"pool_size": 20, "max_overflow": 10}
    manager = getattr(echo.app.backend, "session_manager", None)
    if manager is not None:
        manager.forked = True


def call(task_data: Any) -> Any:
    return echo.delay(task_data).get(timeout=CALL_TIMEOUT, interval=POLL_INTERVAL)


async def run(port: int) -> None:
    pool_result_connections()
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(64) as pool:

        async def job(task_data: Any) -> Any:
            return await loop.run_in_executor(pool, partial(call, task_data))

        await serve(port, job)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(run(parser.parse_args().port))


if __name__ == "__main__":
    main()
