"""The distributed Cache: Redis through redis-py's asyncio client, shared by every node.

Redis errors are translated to `DependencyUnavailableError` here, in `_answering`, and
nowhere else; callers decide whether a cache outage matters (it should not).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from agentrunner.domain.errors import ConfigError, DependencyUnavailableError
from agentrunner.domain.redaction import mask_url
from agentrunner.ports.limits import SlotRenewal

_NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "

# The slots' clock (see ports.limits.Slots), first in both slot scripts: KEYS[2] is the hash
# {v: the clock in ms, t: Redis's time of the last call, g: the grace's end on the clock};
# ARGV[2] the lease in ms. Time passes on it only while the store is called: a gap longer
# than half a lease (nobody reached the store) counts as half a lease. When the hash is
# missing the store is fresh or lost its data: a grace of one lease starts, in which the
# acquire script refuses new holders while renewals add theirs back.
_SLOT_CLOCK = """
local t = redis.call('TIME')
local real = t[1] * 1000 + math.floor(t[2] / 1000)
local lease = tonumber(ARGV[2])
local clock = redis.call('HMGET', KEYS[2], 'v', 't', 'g')
local now = tonumber(clock[1])
local grace = tonumber(clock[3]) or 0
if now then
  now = now + math.min(math.max(0, real - tonumber(clock[2])), math.floor(lease / 2))
else
  now = real
  grace = real + lease
end
redis.call('HSET', KEYS[2], 'v', now, 't', real, 'g', grace)
"""
# KEYS: the scope's sorted set (holder -> lease end on the clock), the clock; ARGV: holder,
# lease ms, limit. 1 when the holder has a slot. The keys get no TTL: an eviction policy
# of volatile-* never drops a held slot (an emptied sorted set is deleted by Redis itself).
_ACQUIRE_SLOT = (
    _SLOT_CLOCK
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if now < grace or redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
return 1
"""
)
# KEYS: the scope's sorted set, the clock; ARGV: holder, lease ms, limit. Extends the lease
# (1); or adds the holder back when it was gone and fewer than the limit hold the scope,
# whatever the grace (2); or leaves it out, its place taken (0).
_RENEW_SLOT = (
    _SLOT_CLOCK
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  return 2
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
return 1
"""
)
_RENEWALS = {1: SlotRenewal.KEPT, 2: SlotRenewal.BACK, 0: SlotRenewal.LOST}

# KEYS[1]: the bucket's hash; ARGV: per minute, amount, "take" or "debit". The milliseconds
# to wait (0: taken or debited). At most one second's worth is kept.
_BUCKET = (
    _NOW_MS
    + """
local rate = tonumber(ARGV[1]) / 60000
local capacity = math.max(1, tonumber(ARGV[1]) / 60)
local amount = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local wait = 0
if ARGV[3] == 'debit' or (tokens >= amount and tokens >= 0) then
  tokens = tokens - amount
else
  wait = math.ceil((math.max(amount, 0) - tokens) / rate)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate) + 60000)
return wait
"""
)


class RedisCache:
    """Cache in Redis (see `ports.cache.Cache`), also the shared concurrency slots and token
    buckets (`ports.limits.Slots`, `ports.limits.Buckets`): every key is stored as `key_prefix + key`,
    with a per-key TTL in milliseconds.

    Contract: each call gives up after about `timeout_seconds` when Redis does not answer
    (no retries: a cache that is down is skipped, not waited for) and raises
    `DependencyUnavailableError`, whose message names the URL without its password; no
    redis-py exception escapes. Slot and bucket calls wait up to `limits_timeout_seconds`
    instead, on connections of their own: the limits wait for the store anyway, and a call
    written is applied by Redis whether or not its answer comes in time, so giving up
    early only costs a reconnection (on a loaded machine, the next timeout: renewals that
    never get through). Connects lazily, so building one never touches the network.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "agentrunner:",
        timeout_seconds: float = 0.5,
        limits_timeout_seconds: float = 5.0,
    ) -> None:
        self._where = mask_url(url)  # the password, in the authority or (unix sockets) the query
        self._prefix = key_prefix
        self._clock_key = f"{key_prefix}slots:clock"
        try:
            self._client = self._connect(url, timeout_seconds)
            self._limits = self._connect(url, limits_timeout_seconds)
        except ValueError as exc:
            raise ConfigError(
                f"invalid Redis URL {self._where}: {exc}; expected redis://[:password@]host:port/db"
            ) from exc
        self._acquire = self._limits.register_script(_ACQUIRE_SLOT)
        self._renew = self._limits.register_script(_RENEW_SLOT)
        self._bucket = self._limits.register_script(_BUCKET)

    @staticmethod
    def _connect(url: str, timeout_seconds: float) -> Redis:
        return Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), retries=0),
        )

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

    # Slots (see ports.limits.Slots): a sorted set per scope, holder -> lease end on the slots' clock
    # (kept in Redis: no skew between processes), changed by one script so two takers never
    # both get the last.

    async def acquire_slot(self, scope: str, holder: str, limit: int, ttl_seconds: float) -> bool:
        keys = [f"{self._prefix}slots:{scope}", self._clock_key]
        async with self._answering(f"slot {scope!r}"):
            taken = await self._acquire(keys=keys, args=[holder, _lease_ms(ttl_seconds), limit])
        return bool(taken)

    async def renew_slot(self, scope: str, holder: str, limit: int, ttl_seconds: float) -> SlotRenewal:
        keys = [f"{self._prefix}slots:{scope}", self._clock_key]
        async with self._answering(f"slot renewal {scope!r}"):
            renewed = await self._renew(keys=keys, args=[holder, _lease_ms(ttl_seconds), limit])
        return _RENEWALS[int(renewed)]

    async def release_slot(self, scope: str, holder: str) -> None:
        async with self._answering(f"slot release {scope!r}"):
            await self._limits.zrem(f"{self._prefix}slots:{scope}", holder)

    # Token buckets (see ports.limits.Buckets): a hash per scope, refilled in Redis's own clock.

    async def take_tokens(self, scope: str, per_minute: float, amount: float) -> float:
        async with self._answering(f"bucket {scope!r}"):
            wait_ms = await self._bucket(keys=[f"{self._prefix}bucket:{scope}"], args=[per_minute, amount, "take"])
        return float(wait_ms) / 1000

    async def debit_tokens(self, scope: str, per_minute: float, amount: float) -> None:
        async with self._answering(f"bucket {scope!r}"):
            await self._bucket(keys=[f"{self._prefix}bucket:{scope}"], args=[per_minute, amount, "debit"])

    async def ping(self) -> None:
        async with self._answering("PING"):
            # redis-py types `ping` for its sync and async clients at once.
            await cast("Awaitable[bool]", self._client.ping())

    async def close(self) -> None:
        async with self._answering("while closing"):
            try:
                await self._client.aclose()
            finally:
                await self._limits.aclose()


def _lease_ms(ttl_seconds: float) -> int:
    # At least 2 ms: the scripts count a silent stretch as half a lease, which must not be 0.
    return max(2, math.ceil(ttl_seconds * 1000))
