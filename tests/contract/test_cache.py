"""Cache contract: set/get/delete and per-entry expiry, the same on every backend."""

from __future__ import annotations

import asyncio

import pytest

from agentrunner.adapters.cache.memory import InMemoryCache
from agentrunner.ports import Cache

WAIT_SECONDS = 5.0
LONG_TTL = 60.0


async def wait_until_missing(cache: Cache, key: str, timeout: float = WAIT_SECONDS) -> None:
    """Wait (bounded) until `key` is no longer in `cache`."""

    async def poll() -> None:
        while await cache.get(key) is not None:
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"{key!r} still cached after {timeout}s") from None


@pytest.mark.parametrize(
    "value",
    [b"hello", b"", b"\x00\xff\x10binary", "ünïcode ✓".encode(), b"x" * 100_000],
    ids=["text", "empty", "binary", "utf8", "large"],
)
async def test_get_returns_the_bytes_that_were_set(cache: Cache, value: bytes) -> None:
    await cache.set("key", value, ttl_seconds=LONG_TTL)

    assert await cache.get("key") == value


async def test_get_of_a_key_never_set_returns_none(cache: Cache) -> None:
    assert await cache.get("never-set") is None


async def test_set_overwrites_the_previous_value(cache: Cache) -> None:
    await cache.set("key", b"old", ttl_seconds=LONG_TTL)

    await cache.set("key", b"new", ttl_seconds=LONG_TTL)

    assert await cache.get("key") == b"new"


async def test_keys_are_independent(cache: Cache) -> None:
    await cache.set("a", b"1", ttl_seconds=LONG_TTL)
    await cache.set("b", b"2", ttl_seconds=LONG_TTL)

    assert (await cache.get("a"), await cache.get("b")) == (b"1", b"2")


async def test_delete_forgets_only_that_key(cache: Cache) -> None:
    await cache.set("gone", b"1", ttl_seconds=LONG_TTL)
    await cache.set("kept", b"2", ttl_seconds=LONG_TTL)

    await cache.delete("gone")

    assert await cache.get("gone") is None
    assert await cache.get("kept") == b"2"


async def test_delete_of_a_missing_key_is_not_an_error(cache: Cache) -> None:
    await cache.delete("never-set")

    assert await cache.get("never-set") is None


async def test_entry_expires_after_its_own_ttl(cache: Cache) -> None:
    await cache.set("short", b"1", ttl_seconds=0.05)
    await cache.set("long", b"2", ttl_seconds=LONG_TTL)

    assert await cache.get("short") == b"1"
    await wait_until_missing(cache, "short")
    assert await cache.get("long") == b"2"


async def test_setting_again_renews_the_ttl(cache: Cache) -> None:
    await cache.set("key", b"old", ttl_seconds=0.05)

    await cache.set("key", b"new", ttl_seconds=LONG_TTL)
    await asyncio.sleep(0.15)

    assert await cache.get("key") == b"new"


async def test_setting_a_short_ttl_over_a_long_one_makes_the_entry_expire(cache: Cache) -> None:
    await cache.set("key", b"old", ttl_seconds=LONG_TTL)

    await cache.set("key", b"new", ttl_seconds=0.05)

    assert await cache.get("key") == b"new"
    await wait_until_missing(cache, "key")


async def test_deleted_key_can_be_set_again(cache: Cache) -> None:
    await cache.set("key", b"1", ttl_seconds=LONG_TTL)
    await cache.delete("key")

    await cache.set("key", b"2", ttl_seconds=LONG_TTL)

    assert await cache.get("key") == b"2"


# -- bounded size (the in-memory backend only: Redis bounds memory its own way) ---------------


async def test_memory_cache_holds_at_most_max_entries() -> None:
    cache = InMemoryCache(max_entries=3)

    for n in range(10):
        await cache.set(f"k{n}", b"v", ttl_seconds=LONG_TTL)

    present = [n for n in range(10) if await cache.get(f"k{n}") is not None]
    assert present == [7, 8, 9]
    await cache.close()


async def test_memory_cache_evicts_the_least_recently_used_entry() -> None:
    cache = InMemoryCache(max_entries=3)
    for key in ("a", "b", "c"):
        await cache.set(key, key.encode(), ttl_seconds=LONG_TTL)

    assert await cache.get("a") == b"a"  # "a" is now the most recently used
    await cache.set("d", b"d", ttl_seconds=LONG_TTL)

    assert await cache.get("b") is None
    assert [await cache.get(key) for key in ("a", "c", "d")] == [b"a", b"c", b"d"]
    await cache.close()
