"""The embedded Cache: an in-process LRU whose entries each expire after their own TTL."""

from __future__ import annotations

import time
from typing import NamedTuple

from cachetools import TLRUCache

from agentrunner.ports.limits import SlotRenewal


class _Entry(NamedTuple):
    value: bytes
    ttl_seconds: float


def _expires_at(_: str, entry: _Entry, now: float) -> float:
    return now + entry.ttl_seconds


class InMemoryCache:
    """Cache in this process's memory, bounded by `max_entries` (least recently used go)."""

    def __init__(self, *, max_entries: int = 10_000) -> None:
        self._entries: TLRUCache[str, _Entry] = TLRUCache(maxsize=max_entries, ttu=_expires_at, timer=time.monotonic)
        self._slots: dict[str, dict[str, float]] = {}  # scope -> holder -> lease end (slots' clock)
        self._clock: tuple[float, float] | None = None  # the slots' clock, and the monotonic time it was read
        self._buckets: dict[str, tuple[float, float]] = {}  # scope -> (tokens, at monotonic)

    # Token buckets (see ports.limits.Buckets), this process's only.

    def _refilled(self, scope: str, per_minute: float) -> tuple[float, float, float]:
        rate, capacity = per_minute / 60.0, max(1.0, per_minute / 60.0)
        now = time.monotonic()
        tokens, at = self._buckets.get(scope, (capacity, now))
        return min(capacity, tokens + (now - at) * rate), now, rate

    async def take_tokens(self, scope: str, per_minute: float, amount: float) -> float:
        tokens, now, rate = self._refilled(scope, per_minute)
        if tokens >= amount and tokens >= 0:
            self._buckets[scope] = (tokens - amount, now)
            return 0.0
        self._buckets[scope] = (tokens, now)
        return (max(amount, 0.0) - tokens) / rate

    async def debit_tokens(self, scope: str, per_minute: float, amount: float) -> None:
        tokens, now, _ = self._refilled(scope, per_minute)
        self._buckets[scope] = (tokens - amount, now)

    # Slots (see ports.limits.Slots): this process's only, as everything in the embedded mode. It
    # cannot lose its data while its holders live (they are in this process): no grace.

    def _slot_clock(self, ttl_seconds: float) -> float:
        """The slots' clock: time passes on it only while slots are asked for (a silent
        stretch counts as half a lease at most), as on the Redis backend."""
        real = time.monotonic()
        if self._clock is None:
            self._clock = (real, real)
        else:
            now, last = self._clock
            self._clock = (now + min(max(0.0, real - last), ttl_seconds / 2), real)
        return self._clock[0]

    async def acquire_slot(self, scope: str, holder: str, limit: int, ttl_seconds: float) -> bool:
        now = self._slot_clock(ttl_seconds)
        holders = {h: t for h, t in self._slots.get(scope, {}).items() if t > now}
        if holder not in holders and len(holders) >= limit:
            self._slots[scope] = holders
            return False
        holders[holder] = now + ttl_seconds
        self._slots[scope] = holders
        return True

    async def renew_slot(self, scope: str, holder: str, limit: int, ttl_seconds: float) -> SlotRenewal:
        now = self._slot_clock(ttl_seconds)
        holders = self._slots.setdefault(scope, {})
        if holder in holders:
            holders[holder] = now + ttl_seconds
            return SlotRenewal.KEPT
        live = {h: t for h, t in holders.items() if t > now}
        self._slots[scope] = live
        if len(live) >= limit:
            return SlotRenewal.LOST  # its place was taken: added back, it would exceed the limit
        live[holder] = now + ttl_seconds
        return SlotRenewal.BACK

    async def release_slot(self, scope: str, holder: str) -> None:
        holders = self._slots.get(scope)
        if holders is not None:
            holders.pop(holder, None)
            if not holders:
                del self._slots[scope]

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        return entry.value if entry else None

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._entries[key] = _Entry(value, ttl_seconds)

    async def add(self, key: str, value: bytes, ttl_seconds: float) -> bool:
        if self._entries.get(key) is not None:
            return False
        self._entries[key] = _Entry(value, ttl_seconds)
        return True

    async def ping(self) -> None:
        return None

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def close(self) -> None:
        self._entries.clear()
