"""The embedded Cache: an in-process LRU whose entries each expire after their own TTL."""

from __future__ import annotations

import time
from typing import NamedTuple

from cachetools import TLRUCache


class _Entry(NamedTuple):
    value: bytes
    ttl_seconds: float


def _expires_at(_: str, entry: _Entry, now: float) -> float:
    return now + entry.ttl_seconds


class InMemoryCache:
    """Cache in this process's memory, bounded by `max_entries` (least recently used go)."""

    def __init__(self, *, max_entries: int = 10_000) -> None:
        self._entries: TLRUCache[str, _Entry] = TLRUCache(maxsize=max_entries, ttu=_expires_at, timer=time.monotonic)
        self._slots: dict[str, dict[str, float]] = {}  # scope -> holder -> expires (monotonic)

    # Slots (see ports.Slots): this process's only, as everything in the embedded mode.

    async def acquire_slot(self, scope: str, holder: str, limit: int, ttl_seconds: float) -> bool:
        now = time.monotonic()
        holders = {h: t for h, t in self._slots.get(scope, {}).items() if t > now}
        if holder not in holders and len(holders) >= limit:
            self._slots[scope] = holders
            return False
        holders[holder] = now + ttl_seconds
        self._slots[scope] = holders
        return True

    async def renew_slot(self, scope: str, holder: str, ttl_seconds: float) -> bool:
        holders = self._slots.get(scope, {})
        now = time.monotonic()
        if holders.get(holder, 0.0) <= now:
            return False
        holders[holder] = now + ttl_seconds
        return True

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
