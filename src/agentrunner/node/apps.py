"""The role apps of a node: one FastAPI app per HTTP role (or a worker-only process's
health probes), and what they share (`EdgeConfig`: readiness checks from the role table,
API keys, limits, metrics)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING

from fastapi import FastAPI

from agentrunner.adapters.config.files import with_sent_schema_file
from agentrunner.api.access import MAKE_A_KEY, ApiKey, check_unique, parse_api_keys
from agentrunner.api.agent_versions import agent_version_routes
from agentrunner.api.config import config_app
from agentrunner.api.edge import EdgeConfig, role_app
from agentrunner.api.evals import eval_routes
from agentrunner.api.limits import InputLimits
from agentrunner.api.orchestrator import orchestrator_app
from agentrunner.api.plan_runs import plan_run_answer, plan_run_routes
from agentrunner.api.queues import queue_routes
from agentrunner.api.scheduler import schedule_read_routes, scheduler_app
from agentrunner.api.slack import slack_app
from agentrunner.api.state import state_app
from agentrunner.api.stats import stats_routes
from agentrunner.domain.errors import AgentRunnerError, ConfigError
from agentrunner.domain.roles import HTTP_ROLES, HttpRole
from agentrunner.logs import get_logger
from agentrunner.node import building
from agentrunner.runtime.budgets import Budget
from agentrunner.runtime.registry import SERVED_MODES
from agentrunner.runtime.topics import agent_queue
from agentrunner.settings import Settings

if TYPE_CHECKING:
    from agentrunner.node.core import Node

log = get_logger(__name__)

# A scrape of /metrics waits at most this long for the bus to count the queues.
QUEUE_DEPTH_TIMEOUT_SECONDS = 2.0


def api_keys(settings: Settings) -> tuple[ApiKey, ...] | None:
    """The keys of API_KEYS and ADMIN_API_KEYS when ENABLE_API_AUTH is on (each one a
    tenant's), else None. Raises `ConfigError` for a malformed, short or repeated key."""
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
            f"ENABLE_API_AUTH=true needs at least one key in API_KEYS (team-a:<key>,...); make one with: {MAKE_A_KEY}"
        )
    check_unique(keys)
    return keys


def edge(node: Node) -> EdgeConfig:
    """What every role app shares: readiness checks (the role table's) and API keys."""
    readiness, advisory = node.lifecycle.checks()
    return EdgeConfig(
        # The cache being down slows reads and makes limited work wait (`limits`): advisory,
        # it does not stop the node from serving.
        readiness=readiness,
        advisory=advisory,
        api_keys=api_keys(node.settings),
        max_body_bytes=node.settings.max_request_bytes,
        rate_limit_per_minute=node.settings.effective_api_rate_limit,
        metrics=partial(metrics_exposition, node),
        tracing=node.tracing,
        idempotency=node.store.idempotency,
        idempotency_ttl_seconds=node.settings.idempotency_ttl_seconds,
        background_metrics=node.metrics,
    )


async def _budgets_of(node: Node, agent: str | None) -> list[Budget]:
    configs = [a.config for a in node.registry.agents.values() if a.config is not None and agent in (None, a.name)]
    tenants = list(dict.fromkeys(key.tenant for key in api_keys(node.settings) or ()))
    return await node.budgets.all(configs, tenants)


async def metrics_exposition(node: Node) -> tuple[bytes, str]:
    """The node's metrics for `/metrics`, with the depth of every agent's queue measured now
    (and, by pool and agent, what workers hold and the oldest wait: runtime/queues.py)."""
    queues = [agent_queue(config.name) for config in node.registry.in_modes(SERVED_MODES)]
    try:
        async with asyncio.timeout(QUEUE_DEPTH_TIMEOUT_SECONDS):
            depths = await node.bus.queue_depths(queues)
    except (AgentRunnerError, TimeoutError) as exc:
        # The last depths measured stay; the bus's own health shows on /health/ready.
        log.warning("queue depths not measured", error=getattr(exc, "message", "timed out"))
    else:
        node.metrics.queue_depths_measured(depths)
        await _backlog_measured(node, depths)
    return node.metrics.exposition()


async def _backlog_measured(node: Node, depths: dict[str, int]) -> None:
    """The queue gauges by pool and agent, from the processes that serve the orchestrator:
    every process would read the same figures, and each read is a query over the
    unfinished executions (bench/queues.py), so one reader per orchestrator replica."""
    if "orchestrator" not in node.roles:
        return
    try:
        node.metrics.queues_measured(await node.queues.with_backlog(depths))
    except AgentRunnerError as exc:  # the database's health shows on /health/ready
        log.warning("queue backlog not measured", error=exc.message)


def health_app(node: Node) -> FastAPI:
    """Health probes for a process that runs only worker pools (no HTTP role)."""
    name = "+".join(sorted(node.roles))
    return role_app(name, f"agentrunner {name}", edge(node))


def input_limits(settings: Settings) -> InputLimits:
    """What callers may send and see: task sizes, event streams (api/limits.py)."""
    return InputLimits(
        max_task_bytes=settings.max_task_bytes,
        max_streams_per_tenant=settings.max_streams_per_tenant,
        max_stream_seconds=settings.max_stream_seconds,
    )


class RoleApps(Mapping[HttpRole, FastAPI]):
    """The apps of some HTTP roles, each built when it is first read and kept: a process
    serves all it asked for, but a test that reads one app of a node builds only that one
    (building the orchestrator's, with its routers, takes tens of milliseconds)."""

    def __init__(self, builders: Mapping[HttpRole, Callable[[], FastAPI]]) -> None:
        self._builders = builders
        self._built: dict[HttpRole, FastAPI] = {}

    def __getitem__(self, role: HttpRole) -> FastAPI:
        app = self._built.get(role)
        if app is None:
            app = self._built[role] = self._builders[role]()
        return app

    def __iter__(self) -> Iterator[HttpRole]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)


def role_apps(node: Node, roles: Collection[HttpRole] = HTTP_ROLES) -> RoleApps:
    """One FastAPI app per HTTP role of `roles` (all by default), built when first read: a
    process builds the apps it serves only (a worker process none)."""
    ready = edge(node)
    builders: dict[HttpRole, Callable[[], FastAPI]] = {
        "state": lambda: state_app(
            ready,
            partial(_budgets_of, node),
            sessions=node.store.sessions,
            executions=node.store.executions,
            queries=node.store.queries,
            steps=node.store.steps,
            max_history_bytes=node.settings.max_history_bytes,
            audit=node.audit,
        ),
        "config": lambda: config_app(
            node.registry,
            ready,
            node.reload_agents,
            node.audit,
            schema_files=partial(with_sent_schema_file, directory=node.settings.agents_dir),
        ),
        "orchestrator": lambda: _orchestrator_app(node, ready),
        "scheduler": lambda: scheduler_app(node.scheduler, ready, input_limits(node.settings)),
        "slack": lambda: slack_app(
            ready,
            node.slack_gateway if node.slack_on else None,
            building.slack_verifier(node.settings),
            off_reason=node.slack_off_reason,
        ),
    }
    return RoleApps({role: builders[role] for role in roles})


def _orchestrator_app(node: Node, ready: EdgeConfig) -> FastAPI:
    orchestrator = orchestrator_app(
        node.orchestrator,
        node.dead_letters,
        ready,
        node.settings.invoke_wait_seconds,
        invoke_extras=partial(plan_run_answer, node.plan_runs),
        limits=input_limits(node.settings),
        audit=node.audit,
    )
    orchestrator.include_router(plan_run_routes(node.plan_runs, node.audit))
    orchestrator.include_router(agent_version_routes(node.registry, node.store.agent_versions))
    orchestrator.include_router(eval_routes(node.evals))
    # Read-only, from the shared state store: the dashboard shows schedules from its own
    # port (8003) without a second origin; changing them stays the scheduler's (8004).
    orchestrator.include_router(schedule_read_routes(node.scheduler))
    orchestrator.include_router(queue_routes(node.queues))
    # Imported here, by the process that serves the orchestrator only: the A2A and MCP SDKs'
    # servers (protobuf, grpc's types, sse) are ~45 MB of RSS and ~0.3 s of CPU a worker
    # process would load for nothing.
    from agentrunner.api.a2a import a2a_routes  # noqa: PLC0415
    from agentrunner.api.mcp_server import mcp_route  # noqa: PLC0415

    a2a_routes(orchestrator, node.orchestrator, input_limits(node.settings), node.settings.invoke_wait_seconds)
    orchestrator.router.routes.append(mcp_route(node.orchestrator, input_limits(node.settings)))
    tenants = list(dict.fromkeys(key.tenant for key in api_keys(node.settings) or ()))
    orchestrator.include_router(stats_routes(node.store.aggregates, tenants))
    return orchestrator
