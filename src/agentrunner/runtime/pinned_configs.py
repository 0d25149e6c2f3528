"""The config an execution runs on: the version of its agent it was created on (issue 24).

An execution records the version it was created on; when it runs after a reload changed its
agent (a redelivery, a resume, a step of a plan run queued before the edit), it still runs on
that version: its config is parsed again from the whole config the version keeps, once per
version (a small cache). A version that no longer parses (the schema moved on) or the store
does not have runs on the current config, with a warning: the run goes on rather than fail
(a store that cannot answer raises: the delivery is tried again).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import AgentVersionNotFoundError
from agentrunner.domain.execution import Execution
from agentrunner.logs import get_logger
from agentrunner.ports.agent_versions import AgentVersions
from agentrunner.runtime.registry import AgentRegistry

log = get_logger(__name__)

# Parsed versions kept: a few per agent covers the work in flight across a reload or two.
CACHED_VERSIONS = 256


def pinned_to(execution: Execution) -> dict[str, Any]:
    """What an invocation of `execution` carries of its version, for the pool to run on."""
    return {"agent_version": execution.agent_version} if execution.agent_version else {}


class PinnedConfigs:
    """Configs of agents by version, for the pools that run executions."""

    def __init__(self, registry: AgentRegistry, versions: AgentVersions) -> None:
        self._registry = registry
        self._versions = versions
        self._parsed: dict[tuple[str, int], AgentConfig] = {}

    async def config(self, agent: str, version: int | None) -> AgentConfig:
        """The config `agent` runs on for work created on `version`: the current one when
        that is the version loaded now (or none was recorded), else the pinned version's.
        Raises what `AgentRegistry.runnable` raises: an agent removed or unavailable now
        takes no work, pinned or not."""
        current = self._registry.runnable(agent)
        if version is None or version == self._registry.version_of(agent):
            return current
        key = (agent, version)
        pinned = self._parsed.get(key)
        if pinned is None:
            try:
                stored = await self._versions.get_version(agent, version)
                pinned = AgentConfig.model_validate(stored.config)
            except (AgentVersionNotFoundError, ValidationError) as exc:
                log.warning(
                    "pinned version not usable, running on the current one",
                    agent=agent,
                    version=version,
                    error=str(exc),
                )
                return current
            if len(self._parsed) >= CACHED_VERSIONS:
                self._parsed.clear()
            self._parsed[key] = pinned
        return pinned
