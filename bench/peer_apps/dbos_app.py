"""DBOS peer of bench/peers.py: one durable workflow that runs one step returning its input
(the same trivial work as the `echo` provider), called in the HTTP server's process as a
DBOS application does. DBOS records the workflow's start, the step's output and the
workflow's result in its system database (SQLite or PostgreSQL, from --database).

Run in the `dbos` virtualenv: python bench/peer_apps/dbos_app.py --port P --database URL
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench.peer_apps._http import serve
from dbos import DBOS


@DBOS.step()  # type: ignore[untyped-decorator]  # DBOS lives in the peer's venv, not ours
async def echo_step(task_data: Any) -> Any:
    return task_data


@DBOS.workflow()  # type: ignore[untyped-decorator]
async def echo_workflow(task_data: Any) -> Any:
    return await echo_step(task_data)


async def run(port: int) -> None:
    DBOS.launch()
    try:
        await serve(port, echo_workflow)
    finally:
        DBOS.destroy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", required=True, help="system database URL: sqlite:///path or postgresql://...")
    args = parser.parse_args()
    DBOS(config={"name": "agentrunner-bench", "system_database_url": args.database, "log_level": "WARNING"})
    asyncio.run(run(args.port))


if __name__ == "__main__":
    main()
