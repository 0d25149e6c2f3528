"""Temporal peer of bench/peers.py: the HTTP server starts one workflow per job (one
activity returning its input) on the dev server and waits for its result; a worker in the
same process runs both (the dev server, `temporal server start-dev --db-filename ...`, is a
process bench/peers.py starts). Default worker settings, sandboxed workflows.

Run in the `temporal` virtualenv: python bench/peer_apps/temporal_app.py --port P --address HOST:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from bench.peer_apps._http import serve
from bench.peer_apps.temporal_workflow import EchoWorkflow, echo_activity
from temporalio.client import Client
from temporalio.worker import Worker

QUEUE = "agentrunner-bench"
CONNECT_TIMEOUT = 60.0  # the dev server's start-up


async def connect(address: str) -> Any:
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            return await Client.connect(address)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def run(port: int, address: str) -> None:
    client = await connect(address)

    async def job(task_data: Any) -> Any:
        return await client.execute_workflow(EchoWorkflow.run, task_data, id=f"bench-{uuid.uuid4()}", task_queue=QUEUE)

    async with Worker(client, task_queue=QUEUE, workflows=[EchoWorkflow], activities=[echo_activity]):
        await serve(port, job)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", required=True, help="the dev server's gRPC address, host:port")
    args = parser.parse_args()
    asyncio.run(run(args.port, args.address))


if __name__ == "__main__":
    main()
