"""The MCP SDK is loaded off the event loop: its first import reads files and its package's
metadata (~100 ms of CPU), which on the loop would stall every run under way when a reload
adds a process's first MCP tool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# In a fresh process (the suite's own has long imported the SDK), under the blocking guard.
FIRST_LOAD = """
import asyncio, sys
from tests.blocking import no_blocking_calls
from agentrunner.adapters.tools.mcp import SDK_MODULES, load_sdk

assert "mcp" not in sys.modules, "imported before its first MCP tool"

async def main() -> None:
    with no_blocking_calls():
        await load_sdk()
        await load_sdk()  # loaded: nothing to do

asyncio.run(main())
missing = [name for name in SDK_MODULES if name not in sys.modules]
assert not missing, missing
"""


def test_the_first_load_of_the_sdk_does_not_block_the_event_loop() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FIRST_LOAD], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stderr[-3000:]
