"""The cache port."""

from __future__ import annotations

from typing import Protocol


class Cache(Protocol):
    """A hot, lossy key-value cache in front of the state store."""

    async def get(self, key: str) -> bytes | None:
        """The cached value, or None when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Cache `value` for `ttl_seconds`."""
        ...

    async def add(self, key: str, value: bytes, ttl_seconds: float) -> bool:
        """Cache `value` only when `key` holds nothing; True when it was stored. Read fills
        use it, so a slow reader never overwrites what a writer has just put there."""
        ...

    async def ping(self) -> None:
        """Raise `DependencyUnavailableError` when the cache does not answer."""
        ...

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
