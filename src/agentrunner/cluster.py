"""`agentrunner cluster up`: every role as its own local process, for machines without
Docker — the same processes docker-compose.yml runs, supervised from one terminal.

The cluster migrates the database, starts each role with `agentrunner serve ROLE`, waits
until every one answers /health/ready, and on Ctrl-C or SIGTERM stops them all (SIGTERM,
30 s to drain, then SIGKILL).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

import httpx

from agentrunner.api.access import check_listen_host
from agentrunner.domain.errors import ConfigError
from agentrunner.settings import HTTP_ROLES, Settings

READY_TIMEOUT_SECONDS = 60.0
DRAIN_SECONDS = 30.0


@dataclass
class RoleProcess:
    """One supervised role."""

    role: str
    health_url: str
    process: subprocess.Popen[bytes]


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
    workers = [f"autonomous-{index + 1}" for index in range(autonomous)] + ["continuous", "collaborative"]
    for name in workers:
        port = _free_port(host)
        role = name.split("-")[0]
        processes.append((name, [*command, role, "--health-port", str(port)], f"http://{host}:{port}"))
    return processes


def start(settings: Settings, autonomous: int) -> list[RoleProcess]:
    """Start every role process and wait until each is ready (raises `ConfigError` naming
    the role that did not come up)."""
    started = [
        RoleProcess(role, url, subprocess.Popen(command, env=os.environ.copy()))  # noqa: S603 - our own CLI
        for role, command, url in plan(settings, autonomous)
    ]
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    pending = {member.role: member for member in started}
    while pending and time.monotonic() < deadline:
        for role, member in list(pending.items()):
            if member.process.poll() is not None:
                stop(started)
                raise ConfigError(f"role {role} exited with {member.process.returncode} while starting")
            try:
                if httpx.get(f"{member.health_url}/health/ready", timeout=1).status_code == 200:
                    del pending[role]
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    if pending:
        stop(started)
        raise ConfigError(f"roles {', '.join(sorted(pending))} not ready within {READY_TIMEOUT_SECONDS:g} s")
    return started


def stop(members: list[RoleProcess]) -> None:
    """SIGTERM every role, give them DRAIN_SECONDS to finish their work, then SIGKILL."""
    for member in members:
        if member.process.poll() is None:
            member.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + DRAIN_SECONDS
    for member in members:
        try:
            member.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            member.process.kill()
            member.process.wait(5)


def run(settings: Settings, autonomous: int) -> int:
    """Start the cluster and supervise it until a signal or a role exits; the exit code."""
    members = start(settings, autonomous)
    stopping = False

    def on_signal(_: int, __: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"agentrunner cluster: {len(members)} processes ready; Ctrl-C stops them", flush=True)  # noqa: T201
    while not stopping:
        exited = [member for member in members if member.process.poll() is not None]
        if exited:
            print(f"role {exited[0].role} exited with {exited[0].process.returncode}; stopping", flush=True)  # noqa: T201
            stop(members)
            return 1
        time.sleep(0.5)
    stop(members)
    return 0
