"""`agentrunner cluster up`: every role as its own local process, for machines without
Docker — the same processes docker-compose.yml runs, supervised from one terminal.

The cluster migrates the database, starts each role with `agentrunner serve ROLE`, waits
until every one answers /health/ready, then supervises them (`agentrunner.supervisor`): a
role that exits, or stays up but stops answering /health/live, is restarted with backoff
while the others keep serving; Ctrl-C or SIGTERM stops them all (SIGTERM, 30 s to drain,
then SIGKILL).
"""

from __future__ import annotations

import socket
import sys

from agentrunner.api.access import check_listen_host
from agentrunner.domain.errors import ConfigError
from agentrunner.domain.roles import HTTP_ROLES, WORKER_ROLES
from agentrunner.liveness import LivenessPolicy
from agentrunner.settings import Settings
from agentrunner.supervisor import (
    DRAIN_SECONDS,
    READY_TIMEOUT_SECONDS,
    RestartPolicy,
    RoleProcess,
    run_cluster,
    start_roles,
    state_file,
    stop,
)

__all__ = ["DRAIN_SECONDS", "READY_TIMEOUT_SECONDS", "RoleProcess", "plan", "run", "start", "stop"]


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def plan(settings: Settings, autonomous: int) -> list[tuple[str, list[str], str]]:
    """(role, command, health URL) of every process of the cluster."""
    check_listen_host(
        settings.host, auth=settings.enable_api_auth, network_allowed=settings.allow_unauthenticated_network
    )
    if not settings.rabbitmq_url:
        raise ConfigError(
            "`cluster up` runs roles in separate processes, which talk through RabbitMQ: set RABBITMQ_URL"
        )
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    command = [sys.executable, "-m", "agentrunner", "serve"]
    # Like `up`, a cluster runs for users who do not use Slack too: without its signing
    # secret the slack role serves with the gateway off instead of refusing to start.
    processes: list[tuple[str, list[str], str]] = [
        (
            role,
            [*command, role, *(["--slack-optional"] if role == "slack" else [])],
            f"http://{host}:{settings.port_of(role)}",
        )
        for role in HTTP_ROLES
    ]
    # The autonomous pool scales out (`--autonomous N`); each other worker role runs once.
    workers = [
        name
        for role in WORKER_ROLES
        for name in ([f"{role}-{index + 1}" for index in range(autonomous)] if role == "autonomous" else [role])
    ]
    for name in workers:
        port = _free_port(host)
        role = name.split("-")[0]
        processes.append((name, [*command, role, "--health-port", str(port)], f"http://{host}:{port}"))
    return processes


def start(settings: Settings, autonomous: int) -> list[RoleProcess]:
    """Start every role process and wait until each is ready (raises `ConfigError` naming
    the role that did not come up, after stopping the others)."""
    return start_roles(plan(settings, autonomous))


def run(settings: Settings, autonomous: int) -> int:
    """Start the cluster and supervise it until a signal (0) or a role that cannot start
    (1); while it runs, `cluster status` reads its state from DATA_DIR/cluster.json."""
    return run_cluster(
        plan(settings, autonomous),
        state_path=state_file(settings.data_dir),
        policy=RestartPolicy(max_failed_starts=settings.cluster_max_failed_starts),
        liveness=LivenessPolicy(
            interval=settings.cluster_liveness_interval_seconds,
            timeout=settings.cluster_liveness_timeout_seconds,
            failures=settings.cluster_liveness_failures,
        ),
    )
