"""Watch the agents directory and call back when a YAML file is added, changed or removed
(an agent file, or a schema file an agent's `output_schema` names, in a folder below too)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

from agentrunner.adapters.config.files import AGENT_FILE_SUFFIXES
from agentrunner.background import iteration_failed
from agentrunner.domain.errors import AgentRunnerError
from agentrunner.logs import get_logger
from agentrunner.ports.metrics import Metrics

log = get_logger(__name__)


# Agent files, and the schema files (JSON or YAML) their `output_schema` may name.
_WATCHED_SUFFIXES = (*AGENT_FILE_SUFFIXES, ".json")


def _agent_file(_: Change, path: str) -> bool:
    return path.endswith(_WATCHED_SUFFIXES)


async def watch_agent_files(
    directory: Path, on_change: Callable[[], Awaitable[None]], *, metrics: Metrics | None = None
) -> None:
    """Run `on_change` after each burst of changes to agent files in `directory` (debounced
    300 ms), until cancelled. A failing reload is logged and the watch goes on; an error the
    reload did not expect is also counted (`agentrunner_background_errors_total`)."""
    if not await asyncio.to_thread(directory.is_dir):
        log.warning("agents directory not found, not watching it", directory=str(directory))
        return
    async for changes in awatch(directory, watch_filter=_agent_file, debounce=300, recursive=True):
        log.info("agent files changed", files=sorted(Path(path).name for _, path in changes))
        try:
            await on_change()
        except AgentRunnerError as exc:
            log.error("agent reload failed", error=exc.message)
        except Exception as exc:  # noqa: BLE001 - logged with its traceback and counted, the watch goes on
            iteration_failed("agent-files-watch", exc, metrics)
