"""The versions of agents as the state store keeps them: a facet of the store
(`ports/state.py`), in its own module as the audit log and retention are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from agentrunner.domain.agent_version import AgentVersion, LoadedContent


class AgentVersions(Protocol):
    """Versions of agents (`domain/agent_version.py`): written by the config role when it
    loads agent files, read by the API. Agents are platform-wide, so are their versions."""

    async def record_versions(self, contents: Sequence[LoadedContent]) -> list[AgentVersion]:
        """Record each content whose hash differs from its agent's latest version as that
        agent's next version (1 for an agent never seen), with the fields changed since the
        latest; the others are left as they are, so replicas may all call this. Returns
        the version each content is, in order."""
        ...

    async def list_versions(self, agent: str) -> list[AgentVersion]:
        """The versions of `agent`, newest first (none for an agent never recorded)."""
        ...

    async def get_version(self, agent: str, version: int) -> AgentVersion:
        """Version `version` of `agent` (raises `StateNotFoundError`)."""
        ...
