"""The egress guard: every call the platform makes on a caller's or a model's behalf
(webhooks, Slack response_url replies, the `http_request` tool, MCP servers whose URL comes
from the environment) resolves its host here, refuses addresses the policy refuses
(domain/egress.py), and connects to the very address it checked.

Why at the connection and not before the request: a name checked, then resolved again by
the HTTP client, can answer a public address to the check and 127.0.0.1 to the connection
(DNS rebinding). So the check runs where the socket is opened: for httpx, a network backend
of httpcore's connection pool whose `connect_tcp` resolves, checks and connects to the
checked address (the URL keeps its name: TLS verifies the certificate for it and sends it
as SNI, `Host` is the name; connections are pooled per name); for aiohttp (slack_sdk), a
resolver that returns only checked addresses (adapters/slack/replies.py). Resolution runs off the event loop
(`loop.getaddrinfo` uses the default executor). Proxies from the environment are ignored by
guarded clients: through a proxy the guard would check the proxy, not the destination.

Standard library `ipaddress` plus httpcore's public network-backend interface are enough;
httpx offers no parameter for a backend, so the pool is built here (`_pool`, pinned by a
test).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpcore
import httpx

from agentrunner.domain.egress import (
    REFUSED_PRIVATE,
    EgressPolicy,
    EgressRefusedError,
    IPAddress,
    IPNetwork,
    literal_address,
)

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the system's resolver, in the default executor)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class EgressGuard:
    """Resolves and checks outbound hosts against an `EgressPolicy`.

    Contract: `addresses` returns only addresses the policy allows (in resolver order) or
    raises `EgressRefusedError` (reason `refused: private address`) when the host has any
    refused address (a name that answers both is refused: it would be a coin toss) and
    `OSError` when the name does not resolve."""

    def __init__(self, policy: EgressPolicy | None = None, *, resolver: Resolver = system_resolver) -> None:
        self.policy = policy or EgressPolicy()
        self._resolve = resolver
        self._ssl: ssl.SSLContext | None = None

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """One verifying TLS context for every guarded client (loading CA roots costs ~10 ms)."""
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context(trust_env=False)
        return self._ssl

    async def load_tls(self) -> None:
        """Build `ssl_context` in a thread (CA roots are files), so that no client of this
        guard builds it on the event loop."""
        if self._ssl is None:
            self._ssl = await asyncio.to_thread(httpx.create_ssl_context, trust_env=False)

    async def addresses(self, host: str, port: int, *, extra: Sequence[IPNetwork] = ()) -> list[IPAddress]:
        """The checked addresses to connect to for `host`."""
        literal = literal_address(host)
        if literal is not None:
            found = [literal]
        else:
            resolved = [literal_address(address) for address in await self._resolve(host.rstrip("."), port)]
            found = [address for address in resolved if address is not None]
            if not found:
                raise OSError(f"{host} has no address")
        refused = [address for address in found if not self.policy.allows(address, extra)]
        if refused:
            what = f"{host} is" if literal is not None else f"{host} resolves to {refused[0]}, which is"
            raise EgressRefusedError(
                f"{what} not a public address (an operator may allow networks with EGRESS_ALLOWED_NETWORKS)",
                reason=REFUSED_PRIVATE,
            )
        return found

    def client(
        self,
        *,
        timeout: float | httpx.Timeout,
        headers: dict[str, str] | None = None,
        extra: Sequence[IPNetwork] = (),
        **options: Any,
    ) -> httpx.AsyncClient:
        """An httpx client whose every connection goes through this guard (redirects off,
        environment proxies ignored)."""
        return httpx.AsyncClient(
            transport=GuardedTransport(self, extra=extra),
            timeout=timeout,
            headers=headers,
            follow_redirects=False,
            trust_env=False,
            **options,
        )


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's default backend, connecting only to addresses the guard checked."""

    def __init__(self, guard: EgressGuard, extra: Sequence[IPNetwork]) -> None:
        self._guard = guard
        self._extra = tuple(extra)
        self._backend: httpcore.AsyncNetworkBackend = httpcore.AnyIOBackend()  # asyncio, through anyio

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            # Resolving is part of connecting: bounded by the connect timeout too.
            addresses = await asyncio.wait_for(self._guard.addresses(host, port, extra=self._extra), timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"{host} did not resolve in time") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} does not resolve") from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._backend.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not an egress destination")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool that opens connections through the guard."""

    def __init__(self, guard: EgressGuard, *, extra: Sequence[IPNetwork] = ()) -> None:
        super().__init__(verify=guard.ssl_context, trust_env=False)
        limits = httpx.Limits()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=guard.ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(guard, extra),
        )
