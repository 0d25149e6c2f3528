"""Serving a node: its HTTP roles on their ports (or a worker-only process's health
probes) under uvicorn, until SIGINT/SIGTERM, on uvloop when installed, with TLS when asked
and the start-up heap frozen."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any, Literal, TypeVar

import uvicorn
from fastapi import FastAPI

from agentrunner.api.access import NetworkGuard, check_listen_host, default_allowed_hosts
from agentrunner.api.server import PortRouter, bind, modern_tls
from agentrunner.domain.errors import ConfigError
from agentrunner.domain.roles import HTTP_ROLES
from agentrunner.logs import get_logger
from agentrunner.node.core import Node

log = get_logger(__name__)

T = TypeVar("T")
EventLoopChoice = Literal["auto", "uvloop", "asyncio"]


def event_loop_factory(choice: EventLoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop a server process runs on (EVENT_LOOP): uvloop's when `choice` is "uvloop", or
    "auto" and uvloop is installed (where it is not: Windows, PyPy); None for the stdlib's.

    uvloop is the loop uvicorn itself picks; `Server.serve` under our own runner would not.
    Its transports make each socket write and each wake-up cheaper, which is most of a
    request's CPU here. Raises `ConfigError` when "uvloop" is asked and it is not installed."""
    if choice == "asyncio":
        return None
    if importlib.util.find_spec("uvloop") is None:
        if choice == "uvloop":
            raise ConfigError("EVENT_LOOP=uvloop but uvloop is not installed: pip install uvloop, or EVENT_LOOP=auto")
        return None
    import uvloop  # noqa: PLC0415 - only when chosen and present

    return uvloop.new_event_loop


def run_on_loop(choice: EventLoopChoice, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()` to its end on the loop `choice` selects (see `event_loop_factory`)."""
    with asyncio.Runner(loop_factory=event_loop_factory(choice)) as runner:
        return runner.run(main())


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
    cyclic garbage are never collected, so a process that starts many nodes (tests) must not.

    The collector is on again after it: `agentrunner serve` and `up` start with it off
    (`cli.collector.collector_paused`), and this one collection is the start's only one; it
    walks only what the node's start made (the imports were frozen before, uncollected:
    `cli.collector.imports_frozen`)."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    gc.enable()
    log.info("start-up heap frozen", objects=gc.get_freeze_count(), ms=round((time.perf_counter() - started) * 1000, 1))


async def serve(node: Node, *, health_port: int = 0) -> bool:
    """Serve the HTTP roles of `node` (or, for a worker-only process, its health probes on
    `health_port`, 0 for any free port) until SIGINT/SIGTERM; False when start-up failed."""
    settings = node.settings
    auth = settings.enable_api_auth
    check_listen_host(settings.host, auth=auth, network_allowed=settings.allow_unauthenticated_network)
    roles = [role for role in HTTP_ROLES if role in node.roles]
    # The apps it serves only: a worker process builds none (nor imports what they need).
    apps: dict[str, FastAPI] = {role: app for role, app in node.apps(roles).items()}
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
        loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
    )
    await server.serve(sockets=list(sockets.values()))
    return server.started
