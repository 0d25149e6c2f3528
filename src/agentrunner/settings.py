"""Every setting of agentrunner, read from the environment and `.env`.

Names follow the user's README (OPENAI_API_KEY, DATABASE_URL, DB_POOL_SIZE, ...). Secrets
are `SecretStr`: masked in every repr, log line and API answer; service URLs, which carry
passwords, are `SecretUrl`: their repr shows where they point, never the credentials. Empty
values count as unset, so `cp .env.example .env` works before any key is filled in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agentrunner.domain.egress import EgressPolicy, parse_networks
from agentrunner.domain.redaction import mask_url
from agentrunner.domain.roles import HttpRole

DEFAULT_API_RATE_LIMIT_PER_MINUTE = 600


class SecretUrl(SecretStr):
    """A URL that may carry credentials (DATABASE_URL, REDIS_URL, ...): `str()` and `repr()`
    show it with its userinfo and credential query values masked; `get_secret_value()` gives
    the URL to connect with. Empty (falsy) when unset."""

    def _display(self) -> str:
        return mask_url(self.get_secret_value())


class Settings(BaseSettings):
    """agentrunner's settings; see `.env.example` for the documented list."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", env_ignore_empty=True, extra="ignore", frozen=True
    )

    # Network
    host: str = "127.0.0.1"
    state_port: int = Field(default=8001, ge=0, le=65535)
    config_port: int = Field(default=8002, ge=0, le=65535)
    orchestrator_port: int = Field(default=8003, ge=0, le=65535)
    scheduler_port: int = Field(default=8004, ge=0, le=65535)
    slack_port: int = Field(default=8005, ge=0, le=65535)

    # Files
    agents_dir: Path = Path("config/agents")
    # Eval files (`evals/<name>.yml`); unset: the `evals` folder beside AGENTS_DIR.
    evals_dir: Path | None = None
    # Reload agent files when they change (the config role watches AGENTS_DIR).
    watch_agents: bool = True
    data_dir: Path = Path("data")
    # `cluster up` stops every role when one fails to start this many times in a row.
    cluster_max_failed_starts: int = Field(default=5, gt=0)
    # `cluster up` kills and restarts a ready role that misses this many /health/live probes
    # in a row (0: never), one every interval, each waiting up to the timeout.
    cluster_liveness_failures: int = Field(default=3, ge=0)
    cluster_liveness_interval_seconds: float = Field(default=5.0, gt=0)
    cluster_liveness_timeout_seconds: float = Field(default=3.0, gt=0)

    # Durable state, cache and bus: empty URLs select the embedded backends.
    database_url: SecretUrl = SecretUrl("")
    db_pool_size: int = Field(default=10, gt=0)
    db_max_overflow: int = Field(default=20, ge=0)
    db_statement_timeout_ms: int = Field(default=30_000, gt=0)
    redis_url: SecretUrl = SecretUrl("")
    redis_key_prefix: str = "agentrunner:"
    cache_ttl_seconds: float = Field(default=300, gt=0)
    rabbitmq_url: SecretUrl = SecretUrl("")
    rabbitmq_prefetch_count: int = Field(default=10, gt=0)
    rabbitmq_exchange_prefix: str = Field(default="agentrunner", pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    # Seconds before each redelivery of an event whose handler failed; after the last one
    # the event becomes a dead letter (len + 1 deliveries in all).
    bus_retry_delays: Annotated[tuple[float, ...], NoDecode] = (1.0, 2.0, 4.0, 8.0)

    # LLM providers
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    aws_region: str = "us-east-1"
    bedrock_endpoint_url: str | None = None
    ollama_host: str = "http://localhost:11434"
    llm_timeout_seconds: float = Field(default=120, gt=0)
    llm_retry_base_seconds: float = Field(default=0.5, ge=0)
    # How long connecting to an agent's MCP server may take when agents load (then: degraded).
    mcp_connect_timeout_seconds: float = Field(default=5, gt=0)
    # The longest wait between two tries of an unreachable MCP server: waits start at 1 s
    # (or this, if shorter) and double, with jitter (their agents run degraded meanwhile).
    mcp_retry_seconds: float = Field(default=300, gt=0)

    # Slack
    slack_signing_secret: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    # Slash commands routed to agents: "/ask=my-assistant,/review=code-reviewer" (plus the
    # built-in `/agent NAME text`); mentions and direct messages go to SLACK_DEFAULT_AGENT.
    slack_commands: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    slack_default_agent: str = ""
    # Agents `/agent NAME text` may run; empty = the agents routed to Slack (SLACK_COMMANDS'
    # agents, SLACK_DEFAULT_AGENT, subscribers of slack.* topics); ("*",) = any agent.
    slack_allowed_agents: Annotated[tuple[str, ...], NoDecode] = ()
    # false = accept unsigned requests (local development only, logged loudly at start).
    slack_verify_signatures: bool = True
    # Slack Web API base URL (chat.postMessage); tests and proxies point it elsewhere.
    slack_api_url: str = "https://slack.com/api/"
    # How long a request, event or reply is remembered to recognise Slack's retries.
    slack_dedup_ttl_seconds: float = Field(default=600, gt=0)
    # Retries of a reply that Slack rate-limits (429, after its Retry-After).
    slack_rate_limit_retries: int = Field(default=3, ge=0)

    # Edges
    max_request_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    enable_api_auth: bool = False
    # "team-a:<key>,team-b:<key>" (keys of 32+ characters); a bare key's tenant id is an
    # HMAC of it under TENANT_ID_SECRET. Admin keys act across tenants.
    api_keys: SecretStr | None = None
    admin_api_keys: SecretStr | None = None
    tenant_id_secret: SecretStr | None = None
    # Requests a minute per API key; unset: 600 with auth on, none with auth off; 0: no limit.
    api_rate_limit_per_minute: int | None = Field(default=None, ge=0)
    # Auth off: listen only on loopback unless this says so; Host names answered (comma-
    # separated, "*" any; unset: loopback and HOST with auth off, any with auth on).
    allow_unauthenticated_network: bool = False
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    # Strict-Transport-Security max-age sent on every answer (0: none).
    hsts_seconds: int = Field(default=0, ge=0)
    # Bounded input: a task's task_data (or an event's payload) as JSON; a conversation's
    # history as JSON (oldest messages dropped first); event streams open per tenant, and
    # how long one lasts before the client reconnects.
    max_task_bytes: int = Field(default=256 * 1024, gt=0)
    max_history_bytes: int = Field(default=1024 * 1024, gt=0)
    max_streams_per_tenant: int = Field(default=20, gt=0)
    max_stream_seconds: float = Field(default=3600, gt=0)
    # Webhooks out: the HMAC-SHA256 secret they are signed with (none: webhooks refused),
    # how long a delivery is retried, the first retry's wait (doubling), one POST's limit.
    webhook_secret: SecretStr | None = None
    webhook_retry_seconds: float = Field(default=24 * 3600, gt=0)
    webhook_backoff_seconds: float = Field(default=1.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_sweep_seconds: float = Field(default=1.0, gt=0)
    # Webhooks are https only; true lets a webhook_url be plain http (a receiver on a trusted network).
    webhook_allow_http: bool = False
    # Outbound calls made for a caller or a model (webhooks, Slack response_url, http_request,
    # MCP URLs from ${VAR}) reach public addresses only; these networks (CIDRs,
    # "10.1.0.0/16,fd00::/8") are allowed besides. Loopback fakes in tests: 127.0.0.0/8.
    egress_allowed_networks: Annotated[tuple[str, ...], NoDecode] = ()
    # Concurrency: executions per provider at once across every worker (e.g.
    # "openai=8,anthropic=4"; agents set theirs in limits.max_concurrency), and how long a
    # slot outlives a worker that died holding it.
    provider_max_concurrency: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    # Model calls and tokens a minute per provider across every worker (e.g. "openai=500").
    provider_requests_per_minute: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    provider_tokens_per_minute: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    slot_lease_seconds: float = Field(default=15.0, gt=0)
    # Per tenant (each API key, when auth is on): executions at once (0: no limit), and a
    # cost budget per day or month (none: no budget).
    tenant_max_concurrency: int = Field(default=0, ge=0)
    tenant_budget_usd: float | None = Field(default=None, gt=0)
    tenant_budget_period: Literal["day", "month"] = "day"
    # How long a POST's answer is replayed to retries with the same Idempotency-Key.
    idempotency_ttl_seconds: float = Field(default=24 * 3600, gt=0)
    enable_tls: bool = False
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    # Tracing: OpenTelemetry spans go to this OTLP/HTTP collector (`/v1/traces` is
    # appended); empty = tracing off, no exporter built.
    otel_exporter_otlp_endpoint: SecretUrl = SecretUrl("")
    # The service name spans carry; empty = "agentrunner-<roles>" of the process.
    otel_service_name: str = ""

    # Behaviour
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The event loop of `up` and `serve`: uvloop when installed (auto), or the stdlib's.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    invoke_wait_seconds: float = Field(default=60, ge=0)
    chain_max_depth: int = Field(default=5, ge=0)
    consumer_heartbeat_timeout_seconds: float = Field(default=60, gt=0)
    consumer_max_restarts: int = Field(default=3, ge=0)
    # Scheduler: how often a replica checks the store for schedules another one changed,
    # and how often it checks held ticks and runs past their timeout.
    scheduler_refresh_seconds: float = Field(default=2, gt=0)
    scheduler_watch_seconds: float = Field(default=1, gt=0)
    # Collaborative pool: how often a run driver re-reads its run while steps run (answers,
    # timeouts) and checks a step's execution in the store, should its finished event be
    # missed; and how often clarifications past their timeout are settled.
    collaborative_poll_seconds: float = Field(default=2, gt=0)
    clarification_sweep_seconds: float = Field(default=5, gt=0)
    # Retention: days a record is kept once created, fractions allowed (0: forever); per kind,
    # None = retention_days. How often the purge runs, and rows per purge transaction.
    retention_days: float = Field(default=30, ge=0)
    retention_executions_days: float | None = Field(default=None, ge=0)
    retention_fires_days: float | None = Field(default=None, ge=0)
    retention_dead_letters_days: float | None = Field(default=None, ge=0)
    retention_webhook_deliveries_days: float | None = Field(default=None, ge=0)
    retention_interval_seconds: float = Field(default=3600, gt=0)
    retention_batch_size: int = Field(default=500, ge=1, le=10_000)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_names(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("slack_allowed_agents", mode="before")
    @classmethod
    def _agent_names(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("bus_retry_delays", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(float(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("egress_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if not isinstance(value, str | list | tuple):
            return value
        parts = value if isinstance(value, str) else [str(part) for part in value]
        return tuple(str(network) for network in parse_networks(parts))

    @property
    def egress_policy(self) -> EgressPolicy:
        """The egress guard's policy: EGRESS_ALLOWED_NETWORKS and WEBHOOK_ALLOW_HTTP."""
        return EgressPolicy(
            allowed_networks=parse_networks(self.egress_allowed_networks), allow_http_webhooks=self.webhook_allow_http
        )

    @field_validator(
        "provider_max_concurrency", "provider_requests_per_minute", "provider_tokens_per_minute", mode="before"
    )
    @classmethod
    def _provider_limits(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        limits: dict[str, int] = {}
        for part in (piece.strip() for piece in value.split(",")):
            if not part:
                continue
            provider, _, count = part.partition("=")
            if not provider.strip() or not count.strip().isdigit() or int(count) < 1:
                raise ValueError(f"entry {part!r} is not provider=N (e.g. openai=8)")
            limits[provider.strip()] = int(count)
        return limits

    @field_validator("slack_commands", mode="before")
    @classmethod
    def _command_routes(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        routes: dict[str, str] = {}
        for part in (piece.strip() for piece in value.split(",")):
            if not part:
                continue
            command, _, agent = part.partition("=")
            command, agent = command.strip(), agent.strip()
            if not command.startswith("/") or len(command) < 2 or not agent:
                raise ValueError(f"SLACK_COMMANDS entry {part!r} is not /command=agent (e.g. /ask=my-assistant)")
            routes[command] = agent
        return routes

    @property
    def effective_api_rate_limit(self) -> int:
        """API_RATE_LIMIT_PER_MINUTE, or its default: 600 a minute per key with auth on."""
        if self.api_rate_limit_per_minute is not None:
            return self.api_rate_limit_per_minute
        return DEFAULT_API_RATE_LIMIT_PER_MINUTE if self.enable_api_auth else 0

    @property
    def effective_database_url(self) -> str:
        """DATABASE_URL, or a SQLite file under DATA_DIR when it is empty."""
        return self.database_url.get_secret_value() or f"sqlite+aiosqlite:///{self.data_dir / 'agentrunner.db'}"

    @property
    def evals_path(self) -> Path:
        """EVALS_DIR, or the `evals` folder beside AGENTS_DIR when it is unset."""
        return self.evals_dir or self.agents_dir.parent / "evals"

    def port_of(self, role: HttpRole) -> int:
        """The HTTP port a role listens on."""
        ports: dict[HttpRole, int] = {
            "state": self.state_port,
            "config": self.config_port,
            "orchestrator": self.orchestrator_port,
            "scheduler": self.scheduler_port,
            "slack": self.slack_port,
        }
        return ports[role]
