"""The node: one agentrunner process's adapters (built by `building`), the engines of the
runtime wired to them, and its lifecycle, which walks the role table (`lifecycle`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from agentrunner.adapters.config.evals import EvalFiles
from agentrunner.adapters.config.files import load_agent_directory
from agentrunner.adapters.config.watch import watch_agent_files
from agentrunner.adapters.egress import EgressGuard
from agentrunner.adapters.metrics.prometheus import PrometheusMetrics
from agentrunner.adapters.providers.catalog import SettingsProviderCatalog
from agentrunner.adapters.providers.offline import Script
from agentrunner.adapters.state.stores import Stores
from agentrunner.adapters.tools.catalog import ToolShelf
from agentrunner.adapters.webhooks import HttpxWebhookSender
from agentrunner.api.access import ApiKey
from agentrunner.api.edge import EdgeConfig
from agentrunner.domain.agent import ExecutionMode
from agentrunner.domain.errors import ConfigError
from agentrunner.domain.event import new_id
from agentrunner.domain.roles import ALL_ROLES, HTTP_ROLES, WORKER_ROLES, HttpRole
from agentrunner.logs import get_logger
from agentrunner.node import apps, building
from agentrunner.node.lifecycle import Lifecycle, role_table
from agentrunner.ports.providers import ProviderCatalog
from agentrunner.ports.slack import SlackReplies
from agentrunner.ports.tracing import Tracing
from agentrunner.runtime.audit import Auditor
from agentrunner.runtime.budgets import Budgets, TenantBudget
from agentrunner.runtime.collaboration import CollaborativePool
from agentrunner.runtime.dead_letters import DeadLetterOffice
from agentrunner.runtime.evals import EvalRunner
from agentrunner.runtime.limits import ConcurrencyLimits
from agentrunner.runtime.limits_store import LimitsStore
from agentrunner.runtime.loop_lag import LoopLagMonitor
from agentrunner.runtime.orchestrator import Orchestrator
from agentrunner.runtime.outbox import OutboxRelay
from agentrunner.runtime.pinned_configs import PinnedConfigs
from agentrunner.runtime.plan_runs import PlanRuns
from agentrunner.runtime.queues import QueueReport
from agentrunner.runtime.rate_limits import RateLimits
from agentrunner.runtime.recovery import resume_unfinished
from agentrunner.runtime.registry import AgentRegistry
from agentrunner.runtime.reloader import AgentReloader
from agentrunner.runtime.retention import RetentionPurger
from agentrunner.runtime.schedule_watch import FireWatch
from agentrunner.runtime.scheduler import Scheduler
from agentrunner.runtime.slack_answers import SlackAnswers
from agentrunner.runtime.slack_gateway import SlackGateway
from agentrunner.runtime.webhooks import WebhookDispatcher
from agentrunner.runtime.worker import AUTONOMOUS_POOL_MODES, CONTINUOUS_POOL_MODES, AgentPool
from agentrunner.settings import Settings

log = get_logger(__name__)


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
        self.slack_off_reason = building.slack_off_reason(settings, self.roles, optional=slack_optional)
        self.node_id = new_id()[:12]
        # None unless OTEL_EXPORTER_OTLP_ENDPOINT is set: no exporter, no wrappers, no cost.
        self.tracing: Tracing | None = building.tracing(settings, self.node_id, self.roles)
        self.catalog: ProviderCatalog = SettingsProviderCatalog(settings, script=script)
        database = building.database(settings)
        self.cache = building.cache(settings)
        # Executions and sessions through the cache; every other facet straight from the database.
        self.store = Stores.over(database, self.cache, ttl_seconds=settings.cache_ttl_seconds)
        # Straight to the database: the audit log is written once and read rarely, never cached.
        self.audit = Auditor(database)
        self.bus = building.bus(settings, self.node_id)
        if self.tracing is not None:
            self.bus = self.tracing.traced_bus(self.bus)
            self.catalog = self.tracing.traced_catalog(self.catalog)
        self.registry = AgentRegistry()
        self.pinned_configs = PinnedConfigs(self.registry, self.store.agent_versions)
        # Straight to the database, as the audit log: the figures are about now.
        self.queues = QueueReport(bus=self.bus, backlog=database, registry=self.registry)
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
        self.evals = EvalRunner(
            orchestrator=self.orchestrator, runs=self.store.eval_runs, suites=EvalFiles(settings.evals_path)
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
            version_of=self.registry.version_of,
        )
        # The purge talks to the database itself: the cache in front has nothing to add.
        self.retention = RetentionPurger(
            retention=database,
            windows=building.retention_windows(settings),
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
            pinned=self.pinned_configs,
            tools=self.tools,
        )
        self.slack_gateway = SlackGateway(
            orchestrator=self.orchestrator,
            runs=self.store.plan_runs,
            cache=self.cache,
            routes=settings.slack_commands,
            default_agent=settings.slack_default_agent,
            allowed_agents=settings.slack_allowed_agents,
            dedup_ttl_seconds=settings.slack_dedup_ttl_seconds,
        )
        # Built only where Slack is served: slack_sdk and aiohttp cost start-up time.
        self.slack_replies: SlackReplies | None = building.slack_replies(settings) if self.slack_on else None
        self.slack_answers: SlackAnswers | None = None
        if self.slack_replies is not None:
            self.slack_answers = SlackAnswers(
                bus=self.bus,
                executions=self.store.executions,
                runs=self.store.plan_runs,
                cache=self.cache,
                replies=self.slack_replies,
            )
        self.reloader = AgentReloader(
            registry=self.registry,
            catalog=self.catalog,
            read=partial(load_agent_directory, settings.agents_dir),
            sync=self._sync_engines,
            bus=self.bus,
            node_id=self.node_id,
            tools=self.tools if self.uses_tools else None,
            # Every node numbers what it loads (the first to load a content records it, the
            # others find it), so the work it creates names its version.
            versions=self.store.agent_versions,
            # The config role watches the agent files (one watcher: it tells the other nodes).
            watch=partial(watch_agent_files, settings.agents_dir, metrics=self.metrics)
            if "config" in self.roles and settings.watch_agents
            else None,
            webhooks_signed=self.webhook_secret is not None,
            metrics=self.metrics,
        )
        self.lifecycle = Lifecycle(role_table(self))

    async def _sync_engines(self) -> None:
        await self.lifecycle.reload()

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
            pinned=self.pinned_configs,
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

    @property
    def uses_tools(self) -> bool:
        """Whether this process connects the agents' tools: it runs agents (a worker pool),
        or reports their status (`GET /agents` on the orchestrator, `/configs` on config)."""
        return bool(self.roles & {"config", "orchestrator", *WORKER_ROLES})

    async def start(self) -> None:
        """Open the adapters, load the agents and start the engines of this node's roles
        (the role table, node/lifecycle.py). When a step fails, what was opened is closed
        again, newest first, and the error is raised."""
        started = time.perf_counter()
        await self.lifecycle.start()
        available = sum(agent.status.runs for agent in self.registry.agents.values())
        log.info(
            "node started",
            node_id=self.node_id,
            roles=sorted(self.roles),
            components=[component.name for component in self.lifecycle.components],
            agents=len(self.registry.agents),
            available=available,
            startup_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def stop(self) -> None:
        """Stop the engines (in-flight work finishes first), then close the adapters, newest
        first; a component whose stop raises does not keep the others open (the first such
        error is raised once all are stopped). Nothing to do when not started."""
        try:
            await self.lifecycle.stop()
        finally:
            log.info("node stopped", node_id=self.node_id)

    async def reload_agents(self) -> None:
        """Load the agent files again, apply them to this node, and tell every other node."""
        await self.reloader.reload()

    async def sync_agent_records(self) -> None:
        """Write the registry to the store's agent table (the config role owns it)."""
        await self.store.agents.sync_agents(self.registry.records())

    async def resume_unfinished(self) -> None:
        """Hand the executions the last process left unfinished to the pools again (the
        embedded mode only: runtime/recovery.py)."""
        await resume_unfinished(store=self.store.queries, bus=self.bus)

    async def start_slack(self) -> None:
        """Start answering in Slack, or say why the gateway is off."""
        if not self.slack_on:
            log.warning("slack gateway off", reason=self.slack_off_reason)
            return
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

    async def stop_slack(self) -> None:
        """Stop answering in Slack and close the client that posts the answers."""
        if self.slack_answers is not None:
            await self.slack_answers.stop()
        if self.slack_replies is not None:
            await self.slack_replies.close()

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
        return apps.api_keys(self.settings)

    def edge(self) -> EdgeConfig:
        """What every role app shares: readiness checks and API keys."""
        return apps.edge(self)

    def health_app(self) -> FastAPI:
        """Health probes for a process that runs only worker pools (no HTTP role)."""
        return apps.health_app(self)

    def apps(self, roles: Collection[HttpRole] = HTTP_ROLES) -> apps.RoleApps:
        """One FastAPI app per HTTP role of `roles` (all by default), built when first read."""
        return apps.role_apps(self, roles)
