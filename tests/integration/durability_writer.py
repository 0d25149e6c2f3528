"""Child process of `test_durability.py`: writes executions until it is killed.

Usage: python durability_writer.py DATABASE_URL

Creates exec-0, exec-1, ... and prints `created <id>` on stdout only after
`create_execution` returned; every 5th execution is then saved as succeeded and
`saved <id>` is printed after `save_execution` returned. A line on stdout is therefore a
write the store acknowledged. Stops by itself after a minute, so a parent that died
without killing it leaves nothing running for long.
"""

from __future__ import annotations

import asyncio
import sys
import time

from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.execution import Execution, ExecutionStatus, utcnow

RUN_AT_MOST_SECONDS = 60.0


def _acknowledge(line: str) -> None:
    print(line, flush=True)


async def write_until_killed(url: str) -> None:
    store = SQLStateStore(url, migrate=True)
    await store.start()
    deadline = time.monotonic() + RUN_AT_MOST_SECONDS
    number = 0
    try:
        while time.monotonic() < deadline:
            execution = Execution(
                execution_id=f"exec-{number}",
                agent="durability",
                status=ExecutionStatus.RUNNING,
                input={"prompt": f"task {number}"},
                trace_id=f"trace-{number}",
                started_at=utcnow(),
            )
            await store.create_execution(execution)
            _acknowledge(f"created {execution.execution_id}")
            if number % 5 == 0:
                done = execution.model_copy(
                    update={
                        "status": ExecutionStatus.SUCCEEDED,
                        "output": f"output of {execution.execution_id}",
                        "finished_at": utcnow(),
                    }
                )
                await store.save_execution(done)
                _acknowledge(f"saved {execution.execution_id}")
            number += 1
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(write_until_killed(sys.argv[1]))
