"""The composition root: builds the adapters that settings select, wires them into the
runtime and the role apps, and owns their lifecycle. Nothing else constructs adapters."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from datetime import timedelta
from functools import partial
from typing import Protocol

import uvicorn
from fastapi import FastAPI

from agentrunner.adapters.bus.memory import InMemoryEventBus
from agentrunner.adapters.cache.memory import InMemoryCache
from agentrunner.adapters.config.files import AgentDirectory, load_agent_directory
from agentrunner.adapters.config.watch import watch_agent_files
from agentrunner.adapters.egress import EgressGuard
from agentrunner.adapters.metrics.prometheus import PrometheusMetrics
from agentrunner.adapters.providers.catalog import SettingsProviderCatalog
from agentrunner.adapters.providers.offline import Script
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.adapters.state.stores import Stores
from agentrunner.adapters.tools.catalog import ToolShelf
from agentrunner.adapters.webhooks import HttpxWebhookSender
from agentrunner.api.access import (
    MAKE_A_KEY,
    ApiKey,
    NetworkGuard,
    check_listen_host,
    check_unique,
    default_allowed_hosts,
    parse_api_keys,
)
from agentrunner.api.config import config_app
from agentrunner.api.edge import EdgeConfig, role_app
from agentrunner.api.limits import InputLimits
from agentrunner.api.orchestrator import orchestrator_app
from agentrunner.api.plan_runs import plan_run_answer, plan_run_routes
from agentrunner.api.scheduler import schedule_read_routes, scheduler_app
from agentrunner.api.server import PortRouter, bind, modern_tls
from agentrunner.api.slack import slack_app
from agentrunner.api.state import state_app
from agentrunner.background import forever, spawn
from agentrunner.domain.agent import ExecutionMode
from agentrunner.domain.agent_document import AgentDocument
from agentrunner.domain.errors import AgentRunnerError, ConfigError
from agentrunner.domain.event import Event, new_id
from agentrunner.domain.execution import ExecutionStatus
from agentrunner.logs import get_logger
from agentrunner.ports.bus import EventBus, Subscription
from agentrunner.ports.cache import Cache
from agentrunner.ports.limits import Buckets, Slots
from agentrunner.ports.providers import ProviderCatalog
from agentrunner.ports.slack import SlackReplies, SlackRequestVerifier
from agentrunner.ports.tracing import Tracing
from agentrunner.runtime.audit import Auditor
from agentrunner.runtime.budgets import Budget, Budgets, TenantBudget
from agentrunner.runtime.collaboration import CollaborativePool
from agentrunner.runtime.dead_letters import DeadLetterOffice
from agentrunner.runtime.limits import ConcurrencyLimits
from agentrunner.runtime.limits_store import LimitsStore
from agentrunner.runtime.loop_lag import LoopLagMonitor
from agentrunner.runtime.orchestrator import Orchestrator
from agentrunner.runtime.outbox import OutboxRelay
from agentrunner.runtime.plan_runs import PlanRuns
from agentrunner.runtime.rate_limits import RateLimits
from agentrunner.runtime.registry import SERVED_MODES, AgentRegistry, AgentStatus
from agentrunner.runtime.retention import RetentionPurger, RetentionWindows
from agentrunner.runtime.schedule_watch import FireWatch
from agentrunner.runtime.scheduler import Scheduler
from agentrunner.runtime.slack_answers import SlackAnswers
from agentrunner.runtime.slack_gateway import SlackGateway
from agentrunner.runtime.topics import CONFIG_CHANGED, agent_queue, invoke_topic, node_config_queue
from agentrunner.runtime.webhooks import WebhookDispatcher
from agentrunner.runtime.worker import AUTONOMOUS_POOL_MODES, CONTINUOUS_POOL_MODES, AgentPool
from agentrunner.settings import HTTP_ROLES, Role, Settings
from agentrunner.tracing import current_trace_id

log = get_logger(__name__)


# A scrape of /metrics waits at most this long for the bus to count the queues.
QUEUE_DEPTH_TIMEOUT_SECONDS = 2.0

# Roles a process can take: the HTTP services, and worker pools (which need no port).
WORKER_ROLES: tuple[str, ...] = ("autonomous", "continuous", "collaborative")
ALL_ROLES: tuple[str, ...] = (*HTTP_ROLES, *WORKER_ROLES)


class Node:
    """One agentrunner process: its adapters, engines and role apps. `roles` says which
    of them this process runs (all of them in the embedded mode)."""

    def __init__(
        self,
        settings: Settings,
        *,
        roles: Sequence[str] = ALL_ROLES,
        script: Script | None = None,
        slack_optional: bool = False,
    ) -> None:
        unknown = sorted(set(roles) - set(ALL_ROLES))
        if unknown:
            raise ConfigError(f"unknown role {', '.join(unknown)}: choose from {', '.join(ALL_ROLES)}")
        if set(roles) != set(ALL_ROLES) and not settings.rabbitmq_url:
            raise ConfigError(
                "roles in separate processes talk through RabbitMQ: set RABBITMQ_URL "
                "(or run every role in one process with `agentrunner up`)"
            )
        self.settings = settings
        self.roles = frozenset(roles)
        self.slack_off_reason = _slack_off_reason(settings, self.roles, optional=slack_optional)
        self._documents: dict[str, AgentDocument] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._tool_retry: asyncio.Task[None] | None = None
        self._applying = asyncio.Lock()  # agents applied one at a time; held by stop (see _apply_agents)
        self._config_events: Subscription | None = None
        self.node_id = new_id()[:12]
        # None unless OTEL_EXPORTER_OTLP_ENDPOINT is set: no exporter, no wrappers, no cost.
        self.tracing: Tracing | None = _tracing(settings, self.node_id, self.roles)
        self.catalog: ProviderCatalog = SettingsProviderCatalog(settings, script=script)
        database = SQLStateStore(
            settings.effective_database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            statement_timeout_ms=settings.db_statement_timeout_ms,
            # SQLite belongs to this process: migrate it. A shared PostgreSQL is migrated
            # once, by `agentrunner db upgrade`, so replicas never race on a migration.
            migrate=not settings.database_url or settings.database_url.get_secret_value().startswith("sqlite"),
        )
        self.cache = _cache(settings)
        # Executions and sessions through the cache; every other facet straight from the database.
        self.store = Stores.over(database, self.cache, ttl_seconds=settings.cache_ttl_seconds)
        # Straight to the database: the audit log is written once and read rarely, never cached.
        self.audit = Auditor(database)
        self.bus = _bus(settings, self.node_id)
        if self.tracing is not None:
            self.bus = self.tracing.traced_bus(self.bus)
            self.catalog = self.tracing.traced_catalog(self.catalog)
        self.registry = AgentRegistry()
        # Every outbound call made for a caller or a model goes through this one guard.
        self.egress = EgressGuard(settings.egress_policy)
        self.tools = ToolShelf(
            store=self.store.sessions,
            bus=self.bus,
            connect_timeout_seconds=settings.mcp_connect_timeout_seconds,
            retry_max_seconds=settings.mcp_retry_seconds,
            egress=self.egress,
        )
        # Built first: the background loops of the engines below count their errors in it.
        self.metrics = PrometheusMetrics()
        self.relay = OutboxRelay(bus=self.bus, store=self.store.outbox, metrics=self.metrics)
        self.budgets = Budgets(
            store=self.store.queries,
            bus=self.bus,
            cache=self.cache,
            tenant_budget=TenantBudget(settings.tenant_budget_usd, settings.tenant_budget_period)
            if settings.tenant_budget_usd
            else None,
        )
        self.orchestrator = Orchestrator(
            bus=self.bus,
            executions=self.store.executions,
            queries=self.store.queries,
            deliveries=self.store.webhook_deliveries,
            relay=self.relay,
            registry=self.registry,
            node_id=self.node_id,
            webhooks_signed=self.webhook_secret is not None,
            budgets=self.budgets,
            egress=self.egress.policy,
            steps=self.store.steps,
        )
        self.webhooks = WebhookDispatcher(
            bus=self.bus,
            executions=self.store.executions,
            deliveries=self.store.webhook_deliveries,
            sender=HttpxWebhookSender(self.egress),
            secret=self.webhook_secret,
            retry_seconds=settings.webhook_retry_seconds,
            backoff_base_seconds=settings.webhook_backoff_seconds,
            timeout_seconds=settings.webhook_timeout_seconds,
            sweep_seconds=settings.webhook_sweep_seconds,
            metrics=self.metrics,
        )
        self.loop_lag = LoopLagMonitor(metrics=self.metrics)
        self.dead_letters = DeadLetterOffice(bus=self.bus, store=self.store.dead_letters, metrics=self.metrics)
        self.scheduler = Scheduler(
            store=self.store.schedules,
            relay=self.relay,
            registry=self.registry,
            refresh_seconds=settings.scheduler_refresh_seconds,
            metrics=self.metrics,
        )
        self.fire_watch = FireWatch(
            executions=self.store.executions,
            schedules=self.store.schedules,
            bus=self.bus,
            deliver=self.scheduler.deliver,
            interval_seconds=settings.scheduler_watch_seconds,
            metrics=self.metrics,
        )
        # The purge talks to the database itself: the cache in front has nothing to add.
        self.retention = RetentionPurger(
            retention=database,
            windows=retention_windows(settings),
            interval_seconds=settings.retention_interval_seconds,
            batch_size=settings.retention_batch_size,
            metrics=self.metrics,
        )
        # One per process: the limits' store not answering is logged once, shown on
        # /health/ready ("limits") and in the metrics.
        self.limits_store = LimitsStore(metrics=self.metrics)
        self.limits = ConcurrencyLimits(
            self.cache,
            provider_limits=settings.provider_max_concurrency,
            lease_seconds=settings.slot_lease_seconds,
            tenant_limit=settings.tenant_max_concurrency,
            store=self.limits_store,
        )
        self.rates = RateLimits(
            self.cache,
            provider_requests_per_minute=settings.provider_requests_per_minute,
            provider_tokens_per_minute=settings.provider_tokens_per_minute,
            store=self.limits_store,
        )
        self.pool = self._agent_pool("autonomous", settings.rabbitmq_prefetch_count, AUTONOMOUS_POOL_MODES)
        # A conversation takes its messages one at a time, in order.
        self.continuous = self._agent_pool("continuous", 1, CONTINUOUS_POOL_MODES)
        self.plan_runs = PlanRuns(
            executions=self.store.executions, runs=self.store.plan_runs, relay=self.relay, registry=self.registry
        )
        self.collaborative = CollaborativePool(
            bus=self.bus,
            executions=self.store.executions,
            run_store=self.store.plan_runs,
            registry=self.registry,
            catalog=self.catalog,
            relay=self.relay,
            plan_runs=self.plan_runs,
            worker_id=f"{self.node_id}-collaborative",
            prefetch=settings.rabbitmq_prefetch_count,
            poll_seconds=settings.collaborative_poll_seconds,
            sweep_seconds=settings.clarification_sweep_seconds,
            llm_retry_base_seconds=settings.llm_retry_base_seconds,
            max_chain_depth=settings.chain_max_depth,
            budgets=self.budgets,
            metrics=self.metrics,
        )
        self.slack_gateway = SlackGateway(
            orchestrator=self.orchestrator,
            cache=self.cache,
            routes=settings.slack_commands,
            default_agent=settings.slack_default_agent,
            allowed_agents=settings.slack_allowed_agents,
            dedup_ttl_seconds=settings.slack_dedup_ttl_seconds,
        )
        # Built only where Slack is served: slack_sdk and aiohttp cost start-up time.
        self.slack_replies: SlackReplies | None = _slack_replies(settings) if self.slack_on else None
        self.slack_answers: SlackAnswers | None = None
        if self.slack_replies is not None:
            self.slack_answers = SlackAnswers(
                bus=self.bus,
                executions=self.store.executions,
                runs=self.store.plan_runs,
                cache=self.cache,
                replies=self.slack_replies,
            )

    def _agent_pool(self, kind: str, prefetch: int, modes: frozenset[ExecutionMode]) -> AgentPool:
        settings = self.settings
        return AgentPool(
            bus=self.bus,
            executions=self.store.executions,
            sessions=self.store.sessions,
            registry=self.registry,
            catalog=self.catalog,
            relay=self.relay,
            worker_id=f"{self.node_id}-{kind}",
            metrics=self.metrics,
            heartbeat_timeout_seconds=settings.consumer_heartbeat_timeout_seconds,
            max_restarts=settings.consumer_max_restarts,
            prefetch=prefetch,
            max_chain_depth=settings.chain_max_depth,
            llm_retry_base_seconds=settings.llm_retry_base_seconds,
            modes=modes,
            limits=self.limits,
            budgets=self.budgets,
            rates=self.rates,
            tools=self.tools,
            max_history_bytes=settings.max_history_bytes,
            journal=self.store.steps,
        )

    @property
    def webhook_secret(self) -> bytes | None:
        """What webhooks are signed with; None: this node sends none (and, an orchestrator
        without it, takes no deliveries from the replicas that have it)."""
        secret = self.settings.webhook_secret.get_secret_value() if self.settings.webhook_secret else ""
        return secret.encode() or None

    @property
    def accepts_work(self) -> bool:
        """Whether this process records work for the pools (invocations, schedule fires,
        Slack requests), and so declares the agents' queues before it does."""
        return bool(self.roles & {"orchestrator", "scheduler"}) or self.slack_on

    @property
    def slack_on(self) -> bool:
        """Whether this process serves Slack (the slack role, with its signing secret or
        verification explicitly off)."""
        return "slack" in self.roles and self.slack_off_reason is None

    def load_agents(self, directory: AgentDirectory | None = None) -> None:
        """(Re)load agent files (or `directory`, parsed already) into the registry, logging
        every problem found. A file that was good and now is not keeps its last good version
        running (with the errors as warnings), so a bad edit never takes an agent down."""
        if directory is None:
            directory = load_agent_directory(self.settings.agents_dir)
        documents = list(directory.documents)
        broken = []
        for failure in directory.broken:
            last_good = self._documents.get(failure.source)
            if last_good is None:
                broken.append(failure)
                for issue in failure.issues:
                    log.error("agent file invalid", problem=str(issue))
                continue
            for issue in failure.issues:
                log.error("agent file invalid, the last good version keeps running", problem=str(issue))
            documents.append(replace(last_good, warnings=(*last_good.warnings, *failure.issues)))
        self.registry.replace_all(documents, broken, self.catalog)
        self._documents = {document.source: document for document in documents}
        for agent in self.registry.agents.values():
            for warning in agent.warnings:
                log.warning("agent file warning", problem=str(warning))
            if agent.status is AgentStatus.UNAVAILABLE:
                log.info("agent unavailable", agent=agent.name, reasons=list(agent.reasons))
            if agent.config is not None and agent.config.webhook_url and self.webhook_secret is None:
                log.warning("agent has a webhook_url but WEBHOOK_SECRET is not set: it is not sent", agent=agent.name)

    @property
    def uses_tools(self) -> bool:
        """Whether this process connects the agents' tools: it runs agents (a worker pool),
        or reports their status (`GET /agents` on the orchestrator, `/configs` on config)."""
        return bool(self.roles & {"config", "orchestrator", *WORKER_ROLES})

    async def load_tools(self) -> None:
        """Connect the tools of the loaded agents (MCP servers listed, installed tools
        found); agents missing some run degraded, with the reasons."""
        if not self.uses_tools:
            return
        configs = [agent.config for agent in self.registry.agents.values() if agent.config is not None]
        missing = await self.tools.load(configs)
        tools = {config.name: self.tools.tools_for(config.name) for config in configs}
        offered = {name: [tool.definition.name for tool in found] for name, found in tools.items()}
        repeatable = {name: {tool.definition.name: tool.repeatable for tool in found} for name, found in tools.items()}
        self.registry.apply_tools(offered, missing, repeatable)
        for name, reasons in missing.items():
            log.warning("agent degraded: some of its tools are missing", agent=name, reasons=reasons)

    async def _retry_tools(self) -> None:
        """Try the MCP servers that did not answer, each when its backoff says (waits
        doubling up to MCP_RETRY_SECONDS); when one does, load the agents again so those
        using it get its tools back. A failure is the supervisor's to log and count: the
        next round tries again, the agents keep running."""
        await self.tools.until_retry_due()
        if await self.tools.retry_unreachable():
            await self._apply_agents()

    def _start_watches(self) -> None:
        """The background tasks that keep the agents current: file watching (config role)
        and new tries of unreachable MCP servers; cancelled by `stop`."""
        if self.uses_tools:
            self._tool_retry = forever(self._retry_tools, task="mcp-retry", metrics=self.metrics)
        if "config" in self.roles and self.settings.watch_agents:
            self._watcher = spawn(
                watch_agent_files(self.settings.agents_dir, self.reload_agents, metrics=self.metrics),
                name="agent-files-watch",
            )

    async def start(self) -> None:
        """Open the adapters, load the agents and start the engines."""
        started = time.perf_counter()
        await self.store.start()
        await self.bus.start()
        await self.egress.load_tls()  # webhooks, Slack replies, tools: none builds it on the loop
        # Parsed off the event loop, as on a reload: YAML and file reads block.
        self.load_agents(await asyncio.to_thread(load_agent_directory, self.settings.agents_dir))
        await self.load_tools()
        if "config" in self.roles:
            # One owner writes the registry table, so replicas of other roles never race on it.
            await self.store.agents.sync_agents(self.registry.records())
        if "orchestrator" in self.roles:
            await self.orchestrator.start()
            await self.dead_letters.start()
            await self.webhooks.start()
        if self.accepts_work:
            await self.orchestrator.declare_queues()
            await self.webhooks.declare()
            # Events a crash left in the outbox are published by any node with a sweep. The
            # slack role accepts invocations too: its outbox marks are batched off the ack path.
            await self.relay.start()
        if "autonomous" in self.roles:
            await self.pool.start()
        if "continuous" in self.roles:
            await self.continuous.start()
        if "collaborative" in self.roles:
            await self.collaborative.start()
        if "scheduler" in self.roles:
            await self.scheduler.start()
            await self.fire_watch.start()
            # Singleton background work lives with the scheduler (one purger at a time: a lease).
            await self.retention.start()
        if self.slack_on:
            await self._start_slack()
        elif "slack" in self.roles:
            log.warning("slack gateway off", reason=self.slack_off_reason)
        if not self.settings.rabbitmq_url:
            await self._resume_unfinished()
        self._config_events = await self.bus.subscribe(
            node_config_queue(self.node_id), [CONFIG_CHANGED], self._on_config_changed, exclusive=True
        )
        self._start_watches()
        await self.loop_lag.start()
        available = sum(agent.status.runs for agent in self.registry.agents.values())
        log.info(
            "node started",
            node_id=self.node_id,
            roles=sorted(self.roles),
            agents=len(self.registry.agents),
            available=available,
            startup_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _start_slack(self) -> None:
        if not self.settings.slack_verify_signatures:
            log.warning(
                "SLACK_VERIFY_SIGNATURES=false: the slack gateway accepts UNSIGNED requests; "
                "local development only, never reachable from the internet"
            )
        if self.settings.slack_bot_token is None:
            log.warning("SLACK_BOT_TOKEN is not set: answers to mentions and messages cannot be posted")
        unknown = self.slack_gateway.unknown_routes()
        if unknown:
            log.warning("SLACK_COMMANDS routes commands to agents that do not exist", routes=unknown)
        if self.slack_answers is not None:
            await self.slack_answers.start()

    async def _resume_unfinished(self) -> None:
        """Embedded mode: the in-memory bus died with the last process, and with it the
        events of executions that had not ended. Hand them to the pools again (RabbitMQ
        keeps and redelivers its own, so this runs only without it)."""
        resumed = 0
        for status in (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING):
            cursor: str | None = None
            while True:
                page = await self.store.queries.list_executions(status=status, limit=200, cursor=cursor)
                for execution in page.items:
                    await self.bus.publish(
                        Event(
                            topic=invoke_topic(execution.agent),
                            # with its tenant: a resumed run still counts for it
                            payload={"execution_id": execution.execution_id}
                            | ({"tenant": execution.tenant} if execution.tenant else {}),
                            trace_id=execution.trace_id,
                        )
                    )
                    resumed += 1
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        if resumed:
            log.warning("resuming executions left unfinished by the last run", count=resumed)

    async def reload_agents(self) -> None:
        """Load the agent files again, apply them to this node, and tell every other node."""
        await self._apply_agents()
        await self.bus.publish(
            Event(topic=CONFIG_CHANGED, payload={"node_id": self.node_id}, trace_id=current_trace_id() or new_id())
        )

    async def _apply_agents(self) -> None:
        # One apply at a time, and `stop` cancels the watches only between applies: a task
        # cancelled inside the store's write would leave its connection checked out with the
        # write under way (SQLite: its thread answers a loop that is gone by then).
        async with self._applying:
            await self._apply_agents_now()

    async def _apply_agents_now(self) -> None:
        # Parsed off the event loop: a reload must not stall the roles this process serves.
        self.load_agents(await asyncio.to_thread(load_agent_directory, self.settings.agents_dir))
        await self.load_tools()
        if "config" in self.roles:
            await self.store.agents.sync_agents(self.registry.records())
        if "autonomous" in self.roles:
            await self.pool.sync()
        if "continuous" in self.roles:
            await self.continuous.sync()
        if "collaborative" in self.roles:
            await self.collaborative.sync()
        if "scheduler" in self.roles:
            await self.scheduler.sync_config()
        if self.accepts_work:
            await self.orchestrator.declare_queues()
        log.info("agents reloaded", agents=len(self.registry.agents), problems=len(self.registry.problems))

    async def _on_config_changed(self, event: Event) -> None:
        if event.payload.get("node_id") != self.node_id:
            await self._apply_agents()

    async def stop(self) -> None:
        """Stop the engines (in-flight work finishes first), then close the adapters."""
        await self.loop_lag.stop()
        async with self._applying:  # an apply under way finishes first (see _apply_agents)
            for task in (self._watcher, self._tool_retry):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if self._config_events is not None:
            await self._config_events.cancel()
        await self.retention.stop()
        await self.fire_watch.stop()
        await self.scheduler.stop()
        await self.relay.stop()
        await self.pool.stop()
        await self.continuous.stop()
        await self.collaborative.stop()
        if self.slack_answers is not None:
            await self.slack_answers.stop()
        if self.slack_replies is not None:
            await self.slack_replies.close()
        await self.dead_letters.stop()
        await self.webhooks.stop()
        await self.orchestrator.stop()
        await self.tools.close()
        await self.bus.close()
        await self.catalog.close()
        await self.cache.close()
        await self.store.close()
        if self.tracing is not None:
            await self.tracing.close()
        log.info("node stopped", node_id=self.node_id)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start on enter, stop on exit."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    @property
    def api_keys(self) -> tuple[ApiKey, ...] | None:
        """The keys of API_KEYS and ADMIN_API_KEYS when ENABLE_API_AUTH is on (each one a
        tenant's), else None. Raises `ConfigError` for a malformed, short or repeated key."""
        settings = self.settings
        if not settings.enable_api_auth:
            return None
        secret = settings.tenant_id_secret.get_secret_value().encode() if settings.tenant_id_secret else None
        keys = tuple(
            key
            for setting, raw, admin in (
                ("API_KEYS", settings.api_keys, False),
                ("ADMIN_API_KEYS", settings.admin_api_keys, True),
            )
            for key in parse_api_keys(
                raw.get_secret_value() if raw else "", setting=setting, admin=admin, tenant_secret=secret
            )
        )
        if not keys:
            raise ConfigError(
                "ENABLE_API_AUTH=true needs at least one key in API_KEYS (team-a:<key>,...);"
                f" make one with: {MAKE_A_KEY}"
            )
        check_unique(keys)
        return keys

    def edge(self) -> EdgeConfig:
        """What every role app shares: readiness checks and API keys."""
        return EdgeConfig(
            readiness={"database": self.store.database.ping, "event_bus": self.bus.ping},
            # The cache being down slows reads and makes limited work wait (`limits`); it
            # does not stop the node from serving.
            advisory={"cache": self.cache.ping, "limits": self.limits_store.check},
            api_keys=self.api_keys,
            max_body_bytes=self.settings.max_request_bytes,
            rate_limit_per_minute=self.settings.effective_api_rate_limit,
            metrics=self.metrics_exposition,
            tracing=self.tracing,
            idempotency=self.store.idempotency,
            idempotency_ttl_seconds=self.settings.idempotency_ttl_seconds,
            background_metrics=self.metrics,
        )

    async def _budgets_of(self, agent: str | None) -> list[Budget]:
        configs = [a.config for a in self.registry.agents.values() if a.config is not None and agent in (None, a.name)]
        tenants = list(dict.fromkeys(key.tenant for key in self.api_keys or ()))
        return await self.budgets.all(configs, tenants)

    async def metrics_exposition(self) -> tuple[bytes, str]:
        """The node's metrics for `/metrics`, with the depth of every agent's queue measured now."""
        queues = [agent_queue(config.name) for config in self.registry.in_modes(SERVED_MODES)]
        try:
            async with asyncio.timeout(QUEUE_DEPTH_TIMEOUT_SECONDS):
                depths = await self.bus.queue_depths(queues)
        except (AgentRunnerError, TimeoutError) as exc:
            # The last depths measured stay; the bus's own health shows on /health/ready.
            log.warning("queue depths not measured", error=getattr(exc, "message", "timed out"))
        else:
            self.metrics.queue_depths_measured(depths)
        return self.metrics.exposition()

    def health_app(self) -> FastAPI:
        """Health probes for a process that runs only worker pools (no HTTP role)."""
        name = "+".join(sorted(self.roles))
        return role_app(name, f"agentrunner {name}", self.edge())

    @property
    def input_limits(self) -> InputLimits:
        """What callers may send and see: task sizes, event streams (api/limits.py)."""
        settings = self.settings
        return InputLimits(
            max_task_bytes=settings.max_task_bytes,
            max_streams_per_tenant=settings.max_streams_per_tenant,
            max_stream_seconds=settings.max_stream_seconds,
        )

    def apps(self) -> dict[Role, FastAPI]:
        """One FastAPI app per HTTP role."""
        ready = self.edge()
        orchestrator = orchestrator_app(
            self.orchestrator,
            self.dead_letters,
            ready,
            self.settings.invoke_wait_seconds,
            invoke_extras=partial(plan_run_answer, self.plan_runs),
            limits=self.input_limits,
            audit=self.audit,
        )
        orchestrator.include_router(plan_run_routes(self.plan_runs, self.audit))
        # Read-only, from the shared state store: the dashboard shows schedules from its own
        # port (8003) without a second origin; changing them stays the scheduler's (8004).
        orchestrator.include_router(schedule_read_routes(self.scheduler))
        return {
            "state": state_app(
                ready,
                self._budgets_of,
                sessions=self.store.sessions,
                executions=self.store.executions,
                queries=self.store.queries,
                steps=self.store.steps,
                max_history_bytes=self.settings.max_history_bytes,
                audit=self.audit,
            ),
            "config": config_app(self.registry, ready, self.reload_agents, self.audit),
            "orchestrator": orchestrator,
            "scheduler": scheduler_app(self.scheduler, ready, self.input_limits),
            "slack": slack_app(
                ready,
                self.slack_gateway if self.slack_on else None,
                _slack_verifier(self.settings),
                off_reason=self.slack_off_reason,
            ),
        }


def retention_windows(settings: Settings) -> RetentionWindows:
    """The retention window of each kind from settings (a kind's own days, else
    RETENTION_DAYS; 0: kept forever); executions at least IDEMPOTENCY_TTL_SECONDS."""

    def window(days: float | None) -> timedelta | None:
        days = settings.retention_days if days is None else days
        return timedelta(days=days) if days > 0 else None

    keys = timedelta(seconds=settings.idempotency_ttl_seconds)
    executions = window(settings.retention_executions_days)
    return RetentionWindows(
        # An invocation's Idempotency-Key lives in its execution's row: kept while a retry
        # may still come, or the retry would run it again.
        executions=max(executions, keys) if executions is not None else None,
        fires=window(settings.retention_fires_days),
        dead_letters=window(settings.retention_dead_letters_days),
        webhook_deliveries=window(settings.retention_webhook_deliveries_days),
        idempotency_keys=keys,
    )


def _bus(settings: Settings, node_id: str) -> EventBus:
    if not settings.rabbitmq_url:
        return InMemoryEventBus(retry_delays=settings.bus_retry_delays)
    # Imported here: aio-pika costs start-up time that the embedded mode does not need.
    from agentrunner.adapters.bus.rabbitmq import RabbitMQEventBus  # noqa: PLC0415

    return RabbitMQEventBus(
        settings.rabbitmq_url.get_secret_value(),
        prefix=settings.rabbitmq_exchange_prefix,
        retry_delays=settings.bus_retry_delays,
        connection_name=f"agentrunner node {node_id}",
    )


def _tracing(settings: Settings, node_id: str, roles: frozenset[str]) -> Tracing | None:
    if not settings.otel_exporter_otlp_endpoint:
        return None
    # Imported here: the OpenTelemetry SDK costs start-up time a node without tracing does not need.
    from agentrunner.adapters.telemetry.otel import OtelTracing  # noqa: PLC0415

    everything = set(roles) == set(ALL_ROLES)
    name = settings.otel_service_name or ("agentrunner" if everything else f"agentrunner-{'+'.join(sorted(roles))}")
    return OtelTracing(
        endpoint=settings.otel_exporter_otlp_endpoint.get_secret_value(),
        service_name=name,
        node_id=node_id,
        roles=sorted(roles),
    )


class _SharedCache(Cache, Slots, Buckets, Protocol):
    """The cache adapters: a cache, concurrency slots and token buckets (shared through Redis)."""


def _cache(settings: Settings) -> _SharedCache:
    if not settings.redis_url:
        return InMemoryCache()
    # Imported here: redis-py costs start-up time that the embedded mode does not need.
    from agentrunner.adapters.cache.redis import RedisCache  # noqa: PLC0415

    return RedisCache(settings.redis_url.get_secret_value(), key_prefix=settings.redis_key_prefix)


def _slack_off_reason(settings: Settings, roles: frozenset[str], *, optional: bool) -> str | None:
    """Why the slack role cannot serve, or None. Without its secret, a process started for
    the slack role refuses to start; `agentrunner up` (every role) and `optional` ones
    (`serve --slack-optional`, as `cluster up` runs it) serve with the gateway off and say
    so on 8005's /health/ready."""
    if settings.slack_signing_secret is not None or not settings.slack_verify_signatures:
        return None
    reason = (
        "SLACK_SIGNING_SECRET is not set: Slack requests cannot be verified "
        "(set it from the app's Basic Information page, or SLACK_VERIFY_SIGNATURES=false for local development)"
    )
    if "slack" in roles and set(roles) != set(ALL_ROLES) and not optional:
        raise ConfigError(f"the slack role does not start: {reason}")
    return reason


def _slack_verifier(settings: Settings) -> SlackRequestVerifier | None:
    if not settings.slack_verify_signatures or settings.slack_signing_secret is None:
        return None
    from agentrunner.adapters.slack.verifier import SlackSignatureVerifier  # noqa: PLC0415

    return SlackSignatureVerifier(settings.slack_signing_secret.get_secret_value())


def _slack_replies(settings: Settings) -> SlackReplies:
    # Imported here: slack_sdk and aiohttp cost ~0.2 s of start-up a node without Slack does not need.
    from agentrunner.adapters.slack.replies import SlackSdkReplies  # noqa: PLC0415

    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    return SlackSdkReplies(
        bot_token=token,
        api_url=settings.slack_api_url,
        rate_limit_retries=settings.slack_rate_limit_retries,
        guard=EgressGuard(settings.egress_policy),
    )


class _GracefulServer(uvicorn.Server):
    """uvicorn's server, but a SIGTERM/SIGINT that led to a clean shutdown exits 0
    instead of being re-raised (a second signal still forces the exit)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


@asynccontextmanager
async def _serving(node: Node) -> AsyncIterator[None]:
    """The node running for a server process's lifetime, its start-up heap frozen."""
    async with node.running():
        freeze_heap()
        yield


def freeze_heap() -> None:
    """Put every object alive after start-up (modules, apps, agents, connections: most of
    the heap, and there for the process's life) out of the cyclic collector's reach.

    Without it each full collection walks them all: ~100 ms with every thread stopped, every
    few hundred requests, which was the whole p99 under load (50 concurrent Slack commands:
    a round in eleven answered 110-150 ms late). Frozen, a full collection walks only what
    came after: 1-2 ms. Only for a process's lifetime (`serve`): frozen objects that become
    cyclic garbage are never collected, so a process that starts many nodes (tests) must not."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info("start-up heap frozen", objects=gc.get_freeze_count(), ms=round((time.perf_counter() - started) * 1000, 1))


async def serve(node: Node, *, health_port: int = 0) -> bool:
    """Serve the HTTP roles of `node` (or, for a worker-only process, its health probes on
    `health_port`, 0 for any free port) until SIGINT/SIGTERM; False when start-up failed."""
    settings = node.settings
    auth = settings.enable_api_auth
    check_listen_host(settings.host, auth=auth, network_allowed=settings.allow_unauthenticated_network)
    roles = [role for role in HTTP_ROLES if role in node.roles]
    apps: dict[str, FastAPI] = {role: app for role, app in node.apps().items()}
    sockets: dict[str, socket.socket] = {role: bind(settings.host, settings.port_of(role)) for role in roles}
    if not sockets:
        apps["health"] = node.health_app()
        sockets["health"] = bind(settings.host, health_port)
    router = PortRouter({sock.getsockname()[1]: apps[role] for role, sock in sockets.items()}, partial(_serving, node))
    guarded = NetworkGuard(
        router,
        allowed_hosts=settings.allowed_hosts or (None if auth else default_allowed_hosts(settings.host)),
        require_client_header=not auth,
        hsts_seconds=settings.hsts_seconds,
    )
    ssl: dict[str, str] = {}
    if settings.enable_tls:
        if not (settings.tls_cert_file and settings.tls_key_file):
            raise ConfigError("ENABLE_TLS=true needs TLS_CERT_FILE and TLS_KEY_FILE")
        ssl = {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)}
    config = uvicorn.Config(
        guarded,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
        **ssl,  # type: ignore[arg-type]
    )
    config.load()
    if config.ssl is not None:
        modern_tls(config.ssl)
    server = _GracefulServer(config)
    log.info(
        "listening",
        host=settings.host,
        ports={role: sock.getsockname()[1] for role, sock in sockets.items()},
        tls=settings.enable_tls,
    )
    await server.serve(sockets=list(sockets.values()))
    return server.started
