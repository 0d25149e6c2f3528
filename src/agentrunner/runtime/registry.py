"""The agents this node knows, each available to run or not, and why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from agentrunner.domain.agent import AgentConfig, ExecutionMode
from agentrunner.domain.agent_document import AgentDocument, BrokenAgentFile, ConfigIssue
from agentrunner.domain.agent_version import AgentVersion, LoadedContent, loaded_content
from agentrunner.domain.errors import AgentNotFoundError, AgentUnavailableError
from agentrunner.domain.reason import SHORT_REASON_CHARS, Reason, short_reason
from agentrunner.ports.providers import ProviderCatalog
from agentrunner.ports.state import AgentRecord
from agentrunner.ports.tools import Repeatable

# Modes whose engines this build runs; the others are listed but unavailable, with reason.
SERVED_MODES = frozenset(
    {ExecutionMode.AUTONOMOUS, ExecutionMode.SCHEDULED, ExecutionMode.CONTINUOUS, ExecutionMode.COLLABORATIVE}
)


class AgentStatus(StrEnum):
    """Whether an agent can take work."""

    AVAILABLE = "available"
    # Runs, but without some of its tools (an MCP server unreachable, a tool not installed).
    DEGRADED = "degraded"
    UNAVAILABLE = "unavailable"

    @property
    def runs(self) -> bool:
        """Whether an agent in this status takes work."""
        return self is not AgentStatus.UNAVAILABLE


@dataclass(frozen=True, slots=True)
class RegisteredAgent:
    """An agent as the platform sees it: its config (if it loaded), status and reasons."""

    name: str
    source: str
    config: AgentConfig | None
    status: AgentStatus
    reasons: tuple[str, ...] = ()
    warnings: tuple[ConfigIssue, ...] = ()
    # The tools offered to its model (MCP tools as `<entry>__<tool>`), once they are loaded.
    tools: tuple[str, ...] = ()
    # Per offered tool: whether a call may be made again after a crash left its outcome unknown.
    repeatable: Mapping[str, Repeatable] = field(default_factory=dict)
    # What a version of its loaded config records (None: its file did not load).
    content: LoadedContent | None = None

    @property
    def short_reason(self) -> str | None:
        """Why it cannot run fully, in one line for lists: the first reason's short form
        (and how many more there are); `reasons` tells the whole story."""
        if not self.reasons:
            return None
        first = short_reason(self.reasons[0])
        if len(self.reasons) == 1:
            return first
        more = f" (+{len(self.reasons) - 1} more)"
        room = SHORT_REASON_CHARS - len(more)
        return (first if len(first) <= room else first[: room - 1].rstrip() + "…") + more


@dataclass
class AgentRegistry:
    """Every agent by name; the orchestrator asks it before accepting work."""

    agents: dict[str, RegisteredAgent] = field(default_factory=dict)
    problems: list[ConfigIssue] = field(default_factory=list)
    # The version number of each (agent, content hash) learned from the store. The reloader
    # numbers contents before it adopts them (runtime/reloader.py), so work never meets a
    # loaded content without its number; a registry filled otherwise (`replace_all`) may.
    versions: dict[tuple[str, str], int] = field(default_factory=dict)

    def replace_all(
        self, documents: list[AgentDocument], broken: list[BrokenAgentFile], catalog: ProviderCatalog
    ) -> None:
        """Register good documents (available unless their provider or mode cannot run)
        and broken files that name an agent (unavailable, with their errors), replacing
        what was registered before."""
        self.adopt(AgentRegistry.built(documents, broken, catalog))

    def adopt(self, staged: AgentRegistry) -> None:
        """Register the agents and problems of `staged` (`built`), replacing what was
        registered before, at once (the version numbers learned are kept)."""
        self.agents = staged.agents
        self.problems = staged.problems

    @staticmethod
    def built(documents: list[AgentDocument], broken: list[BrokenAgentFile], catalog: ProviderCatalog) -> AgentRegistry:
        """A registry of `documents` and `broken` files as `replace_all` registers them, not
        yet adopted: its contents can be numbered before any work sees them."""
        registry = AgentRegistry()
        for document in documents:
            config = document.config
            reasons: list[str] = []
            provider_reason = catalog.unavailable_reason(config.llm_config)
            if provider_reason:
                reasons.append(provider_reason)
            if config.execution_mode not in SERVED_MODES:
                mode = config.execution_mode.value
                reasons.append(
                    Reason(
                        f"execution mode {mode!r} is not served by this version yet",
                        short=f"mode {mode!r} not served",
                    )
                )
            status = AgentStatus.UNAVAILABLE if reasons else AgentStatus.AVAILABLE
            registry.agents[config.name] = RegisteredAgent(
                config.name,
                document.source,
                config,
                status,
                tuple(reasons),
                document.warnings,
                content=loaded_content(config),
            )
        for failure in broken:
            registry.problems.extend(failure.issues)
            name = failure.claimed_name
            if name and name not in registry.agents:
                errors = tuple(_file_problem(issue) for issue in failure.issues)
                registry.agents[name] = RegisteredAgent(name, failure.source, None, AgentStatus.UNAVAILABLE, errors)
        registry.agents = dict(sorted(registry.agents.items()))
        return registry

    def get(self, name: str) -> RegisteredAgent:
        """The agent called `name` (raises `AgentNotFoundError`)."""
        agent = self.agents.get(name)
        if agent is None:
            raise AgentNotFoundError(
                f"agent {name!r} not found: GET /agents lists the {len(self.agents)} known agents", agent=name
            )
        return agent

    def mark_unavailable(self, name: str, reason: str) -> None:
        """Take `name` out of service until its file is loaded again, saying why."""
        agent = self.get(name)
        self.agents[name] = replace(agent, status=AgentStatus.UNAVAILABLE, reasons=(*agent.reasons, reason))

    def apply_tools(
        self,
        offered: dict[str, list[str]],
        missing: dict[str, list[str]],
        repeatable: Mapping[str, Mapping[str, Repeatable]] | None = None,
    ) -> None:
        """Record the tools each agent offers (and, per tool, whether its calls may be
        repeated); agents `missing` some run degraded, saying why (an unavailable agent
        stays unavailable, with these reasons added)."""
        for name, agent in list(self.agents.items()):
            found = missing.get(name, [])
            status = agent.status
            if found and status is AgentStatus.AVAILABLE:
                status = AgentStatus.DEGRADED
            self.agents[name] = replace(
                agent,
                status=status,
                reasons=(*agent.reasons, *found),
                tools=tuple(offered.get(name, ())),
                repeatable=dict((repeatable or {}).get(name, {})),
            )

    def runnable(self, name: str) -> AgentConfig:
        """The config of `name` if it can run now, degraded included (raises
        `AgentUnavailableError`)."""
        agent = self.get(name)
        if not agent.status.runs or agent.config is None:
            raise AgentUnavailableError(
                f"agent {name!r} is unavailable: {'; '.join(agent.reasons)}", agent=name, reasons=list(agent.reasons)
            )
        return agent.config

    def records(self) -> list[AgentRecord]:
        """Every agent as the registry table keeps it."""
        return [
            AgentRecord(
                name=agent.name,
                source=agent.source,
                status=agent.status.value,
                reasons=list(agent.reasons),
                config=agent.config.model_dump(mode="json") if agent.config else None,
            )
            for agent in self.agents.values()
        ]

    def contents(self) -> list[LoadedContent]:
        """What a version of each loaded agent records (`domain/agent_version.py`); an agent
        whose file did not load has no content to record."""
        return [agent.content for agent in self.agents.values() if agent.content is not None]

    def learn_versions(self, versions: Sequence[AgentVersion]) -> None:
        """Remember the numbers the store gave the loaded contents (`version_of`)."""
        self.versions.update({(version.agent, version.content_hash): version.version for version in versions})

    def version_of(self, name: str) -> int | None:
        """The version number of the config `name` runs now (None: unknown agent, a file
        that did not load, or a content not numbered yet)."""
        agent = self.agents.get(name)
        if agent is None or agent.content is None:
            return None
        return self.versions.get((name, agent.content.content_hash))

    def in_modes(self, modes: frozenset[ExecutionMode]) -> list[AgentConfig]:
        """Agents that run (available or degraded) whose execution mode is one of `modes`."""
        return [
            agent.config
            for agent in self.agents.values()
            if agent.config and agent.status.runs and agent.config.execution_mode in modes
        ]


def _file_problem(issue: ConfigIssue) -> Reason:
    """A problem of an agent file as a reason: where it is (the whole path, the line) and,
    short, what is wrong."""
    what = f"{issue.path}: {issue.message}" if issue.path else issue.message
    return Reason(str(issue), short=f"invalid file: {what}")
