"""A write the state store acknowledged survives the writing process being killed -9,
on PostgreSQL and on SQLite (WAL, synchronous=NORMAL survives a process crash).

A child process (`durability_writer.py`) prints each execution id only after its write
returned; the parent kills it with SIGKILL mid-stream, then reads every acknowledged
write back through a store of its own.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.errors import ExecutionNotFoundError
from agentrunner.domain.execution import ExecutionStatus

WRITER = Path(__file__).resolve().parent / "durability_writer.py"
ACKNOWLEDGED_BEFORE_KILL = 200
READ_TIMEOUT_SECONDS = 30.0
EXIT_TIMEOUT_SECONDS = 10.0


@dataclass
class Killed:
    """What the writer acknowledged before it was killed, and how it ended."""

    created: list[str] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)
    returncode: int | None = None


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    # A thread reads the pipe so the parent can wait on the queue with a timeout.
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _record(line: str, killed: Killed, log: Path) -> None:
    kind, _, execution_id = line.partition(" ")
    if kind == "created":
        killed.created.append(execution_id)
    elif kind == "saved":
        killed.saved.append(execution_id)
    else:
        raise AssertionError(f"writer printed {line!r}; its stderr:\n{log.read_text()}")


def kill_writer_mid_stream(url: str, log: Path) -> Killed:
    """Run the writer until it acknowledged enough writes, then SIGKILL it."""
    killed = Killed()
    lines: queue.Queue[str | None] = queue.Queue()
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, str(WRITER), url], stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert process.stdout is not None
    reader = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        while len(killed.created) < ACKNOWLEDGED_BEFORE_KILL:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"writer acknowledged only {len(killed.created)} writes in {READ_TIMEOUT_SECONDS} s; "
                    f"its stderr:\n{log.read_text()}"
                )
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = process.wait(EXIT_TIMEOUT_SECONDS)
                raise AssertionError(f"writer exited by itself with {code}; its stderr:\n{log.read_text()}")
            _record(line, killed, log)
        os.kill(process.pid, signal.SIGKILL)
        killed.returncode = process.wait(EXIT_TIMEOUT_SECONDS)
        # Lines already in the pipe were acknowledged before the kill: count them too.
        reader.join(EXIT_TIMEOUT_SECONDS)
        while not lines.empty():
            if (line := lines.get_nowait()) is not None:
                _record(line, killed, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(EXIT_TIMEOUT_SECONDS)
        reader.join(EXIT_TIMEOUT_SECONDS)
        process.stdout.close()
    return killed


async def test_acknowledged_writes_survive_sigkill_of_the_writer(database_url: str, tmp_path: Path) -> None:
    killed = await asyncio.to_thread(kill_writer_mid_stream, database_url, tmp_path / "writer.log")

    assert killed.returncode == -signal.SIGKILL
    assert len(killed.created) >= ACKNOWLEDGED_BEFORE_KILL
    assert killed.created == [f"exec-{n}" for n in range(len(killed.created))]
    assert killed.saved, "the writer acknowledged no save before it was killed"
    store = SQLStateStore(database_url, migrate=False)
    await store.start()
    try:
        lost = []
        for execution_id in killed.created:
            try:
                await store.get_execution(execution_id)
            except ExecutionNotFoundError:
                lost.append(execution_id)
        saved = [await store.get_execution(execution_id) for execution_id in killed.saved if execution_id not in lost]
    finally:
        await store.close()
    assert lost == [], f"{len(lost)} of {len(killed.created)} acknowledged writes were lost"
    assert [(e.execution_id, e.status, e.output) for e in saved] == [
        (execution_id, ExecutionStatus.SUCCEEDED, f"output of {execution_id}") for execution_id in killed.saved
    ]
