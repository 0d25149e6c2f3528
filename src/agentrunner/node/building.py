"""Building the adapters that settings select: the state store, the event bus, the cache,
tracing and Slack's. The node calls these once, when it is built; nothing else
constructs adapters. The drivers of the distributed mode are imported only when chosen."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from agentrunner.adapters.bus.memory import InMemoryEventBus
from agentrunner.adapters.cache.memory import InMemoryCache
from agentrunner.adapters.egress import EgressGuard
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.errors import ConfigError
from agentrunner.domain.roles import ALL_ROLES
from agentrunner.ports.bus import EventBus
from agentrunner.ports.cache import Cache
from agentrunner.ports.limits import Buckets, Slots
from agentrunner.ports.slack import SlackReplies, SlackRequestVerifier
from agentrunner.ports.tracing import Tracing
from agentrunner.runtime.retention import RetentionWindows
from agentrunner.settings import Settings


class SharedCache(Cache, Slots, Buckets, Protocol):
    """The cache adapters: a cache, concurrency slots and token buckets (shared through Redis)."""


def database(settings: Settings) -> SQLStateStore:
    """The SQL state store of DATABASE_URL (SQLite under DATA_DIR when unset)."""
    return SQLStateStore(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        statement_timeout_ms=settings.db_statement_timeout_ms,
        # SQLite belongs to this process: migrate it. A shared PostgreSQL is migrated
        # once, by `agentrunner db upgrade`, so replicas never race on a migration.
        migrate=not settings.database_url or settings.database_url.get_secret_value().startswith("sqlite"),
    )


def bus(settings: Settings, node_id: str) -> EventBus:
    """RabbitMQ when RABBITMQ_URL is set, else the in-memory bus of the embedded mode."""
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


def tracing(settings: Settings, node_id: str, roles: frozenset[str]) -> Tracing | None:
    """OpenTelemetry tracing when OTEL_EXPORTER_OTLP_ENDPOINT is set, else None."""
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


def cache(settings: Settings) -> SharedCache:
    """Redis when REDIS_URL is set, else the in-memory cache of the embedded mode."""
    if not settings.redis_url:
        return InMemoryCache()
    # Imported here: redis-py costs start-up time that the embedded mode does not need.
    from agentrunner.adapters.cache.redis import RedisCache  # noqa: PLC0415

    return RedisCache(settings.redis_url.get_secret_value(), key_prefix=settings.redis_key_prefix)


def slack_off_reason(settings: Settings, roles: frozenset[str], *, optional: bool) -> str | None:
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


def slack_verifier(settings: Settings) -> SlackRequestVerifier | None:
    """What checks the signature of Slack's requests; None when verification is off."""
    if not settings.slack_verify_signatures or settings.slack_signing_secret is None:
        return None
    from agentrunner.adapters.slack.verifier import SlackSignatureVerifier  # noqa: PLC0415

    return SlackSignatureVerifier(settings.slack_signing_secret.get_secret_value())


def slack_replies(settings: Settings) -> SlackReplies:
    """What posts answers to Slack (built only where Slack is served)."""
    # Imported here: slack_sdk and aiohttp cost ~0.2 s of start-up a node without Slack does not need.
    from agentrunner.adapters.slack.replies import SlackSdkReplies  # noqa: PLC0415

    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    return SlackSdkReplies(
        bot_token=token,
        api_url=settings.slack_api_url,
        rate_limit_retries=settings.slack_rate_limit_retries,
        guard=EgressGuard(settings.egress_policy),
    )


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
