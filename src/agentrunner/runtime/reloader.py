"""Keeps the agent registry current: loads the agent files (a bad edit keeps the last good
version running), connects their tools, and applies a new set to the engines this node
runs, when the files change, when another node says they did (`config.changed`), and when
an MCP server that was unreachable answers again.

A new set of agents is numbered first (each new content of a file recorded as its agent's
next version, `ports/agent_versions.py`) and only then shown to the engines, at once: work
created at any moment names the version it was created on, never none (and a store that
cannot number them fails the reload as a whole: the agents loaded before keep running).

Applies run one at a time, and `stop` ends the background work that triggers them only
between applies: a task cancelled inside the store's write would leave its connection
checked out with the write under way (SQLite: its thread answers a loop that is gone by
then). After `stop`, an apply asked for (an event, an API call) is skipped."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any, Protocol

from agentrunner.background import cancelled, forever, spawn
from agentrunner.domain.agent_document import AgentDocument, BrokenAgentFile
from agentrunner.domain.event import Event, new_id
from agentrunner.logs import get_logger
from agentrunner.ports.agent_versions import AgentVersions
from agentrunner.ports.bus import EventBus, Subscription
from agentrunner.ports.metrics import Metrics
from agentrunner.ports.providers import ProviderCatalog
from agentrunner.ports.tools import ToolCatalog
from agentrunner.runtime.registry import AgentRegistry, AgentStatus
from agentrunner.runtime.topics import CONFIG_CHANGED, node_config_queue
from agentrunner.tracing import current_trace_id

log = get_logger(__name__)

Step = Callable[[], Awaitable[None]]
# Runs `reload` after each burst of changes to the agent files, until cancelled.
Watch = Callable[[Step], Coroutine[Any, Any, None]]


class AgentFiles(Protocol):
    """What a directory of agent files holds: good documents and broken files."""

    @property
    def documents(self) -> Sequence[AgentDocument]:
        """The files that parsed, as agent documents."""
        ...

    @property
    def broken(self) -> Sequence[BrokenAgentFile]:
        """The files that did not, with their problems."""
        ...


class RetriedTools(ToolCatalog, Protocol):
    """A tool catalog that tries unreachable MCP servers again on a backoff."""

    async def until_retry_due(self) -> None:
        """Return when an unreachable server's next try is due (waits while none is)."""
        ...


class AgentReloader:
    """Loads agents into `registry` and keeps them current (see the module docstring).

    `read` parses the agent files (blocking: run in a thread); `tools` is None where this
    node connects no tools; `sync` applies the registry to the engines after a reload;
    `watch`, when given, watches the files and is started by `start`."""

    def __init__(
        self,
        *,
        registry: AgentRegistry,
        catalog: ProviderCatalog,
        read: Callable[[], AgentFiles],
        sync: Step,
        bus: EventBus,
        node_id: str,
        tools: RetriedTools | None = None,
        versions: AgentVersions | None = None,
        watch: Watch | None = None,
        webhooks_signed: bool = True,
        metrics: Metrics | None = None,
    ) -> None:
        self._registry = registry
        self._catalog = catalog
        self._read = read
        self._sync = sync
        self._bus = bus
        self._node_id = node_id
        self.tools = tools  # None where this node connects no tools
        self._versions = versions  # None: contents are not numbered (`version_of` is None)
        self._watch = watch
        self._webhooks_signed = webhooks_signed
        self._metrics = metrics
        self._documents: dict[str, AgentDocument] = {}
        self._applying = asyncio.Lock()
        self._stopped = False
        self._tasks: list[asyncio.Task[None]] = []
        self._config_events: Subscription | None = None

    async def load_all(self) -> None:
        """Read the agent files (off the event loop: YAML and file reads block), connect
        their tools and number their contents, then show them at once: no moment when an
        agent is registered without the tools it has (a reload after an MCP server came
        back showed it available with none while the tools were connected)."""
        staged, documents = self._staged(await asyncio.to_thread(self._read))
        await self._connect_tools(staged)
        if self._versions is not None:
            # Numbered before the engines see them: no moment when a loaded content has none.
            self._registry.learn_versions(await self._versions.record_versions(staged.contents()))
        self._registry.adopt(staged)
        self._documents = {document.source: document for document in documents}
        for agent in self._registry.agents.values():
            for warning in agent.warnings:
                log.warning("agent file warning", problem=str(warning))
            if agent.status is AgentStatus.UNAVAILABLE:
                log.info("agent unavailable", agent=agent.name, reasons=list(agent.reasons))
            if agent.config is not None and agent.config.webhook_url and not self._webhooks_signed:
                log.warning("agent has a webhook_url but WEBHOOK_SECRET is not set: it is not sent", agent=agent.name)

    def _staged(self, files: AgentFiles) -> tuple[AgentRegistry, list[AgentDocument]]:
        """`files` (parsed already) as a registry not yet adopted and the documents in it,
        logging every problem found. A file that was good and now is not keeps its last
        good version running (with the errors as warnings), so a bad edit never takes an
        agent down."""
        documents = list(files.documents)
        broken = []
        for failure in files.broken:
            last_good = self._documents.get(failure.source)
            if last_good is None:
                broken.append(failure)
                for issue in failure.issues:
                    log.error("agent file invalid", problem=str(issue))
                continue
            for issue in failure.issues:
                log.error("agent file invalid, the last good version keeps running", problem=str(issue))
            documents.append(replace(last_good, warnings=(*last_good.warnings, *failure.issues)))
        return AgentRegistry.built(documents, broken, self._catalog), documents

    async def _connect_tools(self, staged: AgentRegistry) -> None:
        """Connect the tools of the `staged` agents (MCP servers listed, installed tools
        found); agents missing some run degraded, with the reasons."""
        tools = self.tools
        if tools is None:
            return
        configs = [agent.config for agent in staged.agents.values() if agent.config is not None]
        missing = await tools.load(configs)
        found = {config.name: tools.tools_for(config.name) for config in configs}
        offered = {name: [tool.definition.name for tool in agent_tools] for name, agent_tools in found.items()}
        repeatable = {
            name: {tool.definition.name: tool.repeatable for tool in agent_tools} for name, agent_tools in found.items()
        }
        staged.apply_tools(offered, missing, repeatable)
        for name, reasons in missing.items():
            log.warning("agent degraded: some of its tools are missing", agent=name, reasons=reasons)

    async def reload(self) -> None:
        """Load the agent files again, apply them to this node, and tell every other node."""
        await self.apply()
        await self._bus.publish(
            Event(topic=CONFIG_CHANGED, payload={"node_id": self._node_id}, trace_id=current_trace_id() or new_id())
        )

    async def apply(self) -> None:
        """Load the agent files again and apply them to this node's engines (one apply at a
        time; none after `stop`)."""
        async with self._applying:
            if self._stopped:
                return
            # Parsed off the event loop: a reload must not stall the roles this process serves.
            await self.load_all()
            await self._sync()
            log.info("agents reloaded", agents=len(self._registry.agents), problems=len(self._registry.problems))

    async def start(self) -> None:
        """Listen for other nodes' reloads, and start the background work that keeps the
        agents current: new tries of unreachable MCP servers, the file watch."""
        self._stopped = False
        self._config_events = await self._bus.subscribe(
            node_config_queue(self._node_id), [CONFIG_CHANGED], self._on_config_changed, exclusive=True
        )
        if self.tools is not None:
            self._tasks.append(forever(self._retry_tools, task="mcp-retry", metrics=self._metrics))
        if self._watch is not None:
            self._tasks.append(spawn(self._watch(self.reload), name="agent-files-watch"))

    async def stop(self) -> None:
        """End the background work (an apply under way finishes first) and stop listening."""
        async with self._applying:
            self._stopped = True
            tasks, self._tasks = self._tasks, []
            for task in tasks:
                await cancelled(task)
        subscription, self._config_events = self._config_events, None
        if subscription is not None:
            await subscription.cancel()

    async def _on_config_changed(self, event: Event) -> None:
        if event.payload.get("node_id") != self._node_id:
            await self.apply()

    async def _retry_tools(self) -> None:
        """Try the MCP servers that did not answer, each when its backoff says (waits
        doubling up to MCP_RETRY_SECONDS); when one does, load the agents again so those
        using it get its tools back. A failure is the supervisor's to log and count: the
        next round tries again, the agents keep running."""
        assert self.tools is not None  # started only with tools
        await self.tools.until_retry_due()
        if await self.tools.retry_unreachable():
            await self.apply()
