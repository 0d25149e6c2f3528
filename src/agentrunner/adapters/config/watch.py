"""Watch the agents directory and call back when a YAML file is added, changed or removed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

from agentrunner.adapters.config.files import AGENT_FILE_SUFFIXES
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.logs import get_logger

log = get_logger(__name__)


def _agent_file(_: Change, path: str) -> bool:
    return path.endswith(AGENT_FILE_SUFFIXES)


async def watch_agent_files(directory: Path, on_change: Callable[[], Awaitable[None]]) -> None:
    """Run `on_change` after each burst of changes to agent files in `directory` (debounced
    300 ms), until cancelled. A failing reload is logged and the watch goes on."""
    if not await asyncio.to_thread(directory.is_dir):
        log.warning("agents directory not found, not watching it", directory=str(directory))
        return
    async for changes in awatch(directory, watch_filter=_agent_file, debounce=300, recursive=False):
        log.info("agent files changed", files=sorted(Path(path).name for _, path in changes))
        try:
            await on_change()
        except AgentRunnerError as exc:
            log.error("agent reload failed", error=exc.message)
