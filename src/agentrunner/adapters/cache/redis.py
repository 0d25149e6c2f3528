"""The distributed Cache: Redis through redis-py's asyncio client, shared by every node.

Redis errors are translated to `DependencyUnavailableError` here, in `_answering`, and
nowhere else; callers decide whether a cache outage matters (it should not).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from agentrunner.domain.errors import ConfigError, DependencyUnavailableError


def redacted_url(url: str) -> str:
    """`url` with its password (in the authority or, for unix sockets, the query) replaced
    by `***`, fit for logs and error messages."""
    parts = urlsplit(url)
    redacted = url
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 address keeps its brackets
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        redacted = redacted.replace(parts.netloc, f"{parts.username or ''}:***@{host}{port}", 1)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "password" for name, _ in query):
        masked = [(name, "***" if name == "password" else value) for name, value in query]
        redacted = f"{redacted.partition('?')[0]}?{urlencode(masked, safe='*')}"
    return redacted


class RedisCache:
    """Cache in Redis (see `ports.Cache`): every key is stored as `key_prefix + key`, with a
    per-key TTL in milliseconds.

    Contract: each call gives up after about `timeout_seconds` when Redis does not answer
    (no retries: a cache that is down is skipped, not waited for) and raises
    `DependencyUnavailableError`, whose message names the URL without its password; no
    redis-py exception escapes. Connects lazily, so building one never touches the network.
    """

    def __init__(self, url: str, *, key_prefix: str = "agentrunner:", timeout_seconds: float = 0.5) -> None:
        self._where = redacted_url(url)
        self._prefix = key_prefix
        try:
            self._client = Redis.from_url(
                url,
                socket_timeout=timeout_seconds,
                socket_connect_timeout=timeout_seconds,
                retry=Retry(NoBackoff(), retries=0),
            )
        except ValueError as exc:
            raise ConfigError(
                f"invalid Redis URL {self._where}: {exc}; expected redis://[:password@]host:port/db"
            ) from exc

    @asynccontextmanager
    async def _answering(self, action: str) -> AsyncIterator[None]:
        """Run one Redis call, translating every failure of Redis or of the network."""
        try:
            yield
        except (RedisError, OSError) as exc:  # OSError covers the builtin ConnectionError and TimeoutError
            raise DependencyUnavailableError(
                f"cache {self._where} did not answer {action}: {exc}", cache=self._where
            ) from exc

    async def get(self, key: str) -> bytes | None:
        async with self._answering(f"GET {key!r}"):
            value = await self._client.get(self._prefix + key)
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        # Redis refuses PX 0; the shortest TTL it keeps is 1 ms.
        milliseconds = max(1, math.ceil(ttl_seconds * 1000))
        async with self._answering(f"SET {key!r}"):
            await self._client.set(self._prefix + key, value, px=milliseconds)

    async def add(self, key: str, value: bytes, ttl_seconds: float) -> bool:
        milliseconds = max(1, math.ceil(ttl_seconds * 1000))
        async with self._answering(f"SET NX {key!r}"):
            stored = await self._client.set(self._prefix + key, value, px=milliseconds, nx=True)
        return bool(stored)

    async def delete(self, key: str) -> None:
        async with self._answering(f"DEL {key!r}"):
            await self._client.delete(self._prefix + key)

    async def ping(self) -> None:
        async with self._answering("PING"):
            # redis-py types `ping` for its sync and async clients at once.
            await cast("Awaitable[bool]", self._client.ping())

    async def close(self) -> None:
        async with self._answering("while closing"):
            await self._client.aclose()
