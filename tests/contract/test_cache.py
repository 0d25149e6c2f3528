"""Cache contract: set/get/delete and per-entry expiry, the same on every backend."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from uuid import uuid4

import pytest
import redis.exceptions

from agentrunner.adapters.cache.memory import InMemoryCache
from agentrunner.adapters.cache.redis import RedisCache
from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.ports.cache import Cache
from agentrunner.ports.limits import Buckets, SlotRenewal, Slots
from tests.contract.conftest import REDIS_URL, delete_redis_keys
from tests.ports import free_port

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


async def test_add_stores_only_when_the_key_is_empty(cache: Cache) -> None:
    first = await cache.add("k", b"reader", 60)
    second = await cache.add("k", b"late reader", 60)

    assert (first, second) == (True, False)
    assert await cache.get("k") == b"reader"


async def test_add_after_expiry_stores_again(cache: Cache) -> None:
    await cache.set("k", b"old", 0.05)
    await asyncio.sleep(0.1)

    assert await cache.add("k", b"new", 60) is True
    assert await cache.get("k") == b"new"


async def test_ping_answers_when_the_cache_is_up(cache: Cache) -> None:
    await cache.ping()


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


# -- Redis that does not answer (the Redis backend only) ------------------------------------

# Errors redis.exceptions exports that the standalone asyncio client never raises.
NOT_RAISED_BY_THE_ASYNC_CLIENT = {
    redis.exceptions.ChildDeadlockedError,  # the sync connection pool after a fork
    redis.exceptions.RedisClusterException,  # the cluster client
    redis.exceptions.IncorrectPolicyType,  # cluster command routing
}

CACHE_CALLS: dict[str, Callable[[RedisCache], Awaitable[object]]] = {
    "get": lambda cache: cache.get("key"),
    "set": lambda cache: cache.set("key", b"value", ttl_seconds=LONG_TTL),
    "delete": lambda cache: cache.delete("key"),
    "ping": lambda cache: cache.ping(),
}


@pytest.mark.parametrize("call", CACHE_CALLS.values(), ids=CACHE_CALLS.keys())
async def test_redis_on_a_closed_port_raises_dependency_unavailable_quickly_without_the_password(
    call: Callable[[RedisCache], Awaitable[object]],
) -> None:
    port = free_port()
    cache = RedisCache(f"redis://:s3cret@127.0.0.1:{port}/0", timeout_seconds=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(DependencyUnavailableError) as raised:
            await call(cache)
        elapsed = time.monotonic() - started
    finally:
        await cache.close()

    assert elapsed < 1.0, f"a dead Redis cost {elapsed:.2f}s"
    assert f"127.0.0.1:{port}" in str(raised.value)
    assert "s3cret" not in str(raised.value), "the error message leaks the password"
    assert "s3cret" not in repr(raised.value.context)


async def test_redis_on_a_missing_unix_socket_raises_dependency_unavailable_without_the_password(
    tmp_path: Path,
) -> None:
    cache = RedisCache(f"unix://{tmp_path / 'no-redis.sock'}?db=0&password=s3cret")
    try:
        with pytest.raises(DependencyUnavailableError) as raised:
            await cache.get("key")
    finally:
        await cache.close()

    assert "no-redis.sock" in str(raised.value)
    assert "s3cret" not in str(raised.value), "the error message leaks the password"


def _redis_exceptions() -> list[type[BaseException]]:
    return [
        member
        for member in vars(redis.exceptions).values()
        if inspect.isclass(member)
        and issubclass(member, BaseException)
        and not issubclass(member, tuple(NOT_RAISED_BY_THE_ASYNC_CLIENT))
    ]


@pytest.mark.parametrize(
    "exception",
    [*_redis_exceptions(), ConnectionRefusedError, ConnectionResetError, TimeoutError, OSError],
    ids=lambda exception: f"{exception.__module__}.{exception.__name__}",
)
async def test_every_redis_and_network_error_becomes_dependency_unavailable(exception: type[Exception]) -> None:
    cache = RedisCache("redis://:s3cret@127.0.0.1:6379/0")
    error = exception.__new__(exception)  # some need arguments their __init__ parses

    try:
        with pytest.raises(DependencyUnavailableError) as raised:
            async with cache._answering("GET 'key'"):
                raise error
    finally:
        await cache.close()

    assert raised.value.__cause__ is error


# -- concurrency slots (ports.Slots) --------------------------------------------------

OPENING_LEASE = 0.01


def _slots(cache: Cache) -> Slots:
    assert isinstance(cache, InMemoryCache | RedisCache)
    return cache


async def _opened(cache: Cache) -> Slots:
    """`cache`'s slots past the grace a fresh store opens (Redis: one lease of the first
    call, here a short one); the in-process store opens none."""
    slots = _slots(cache)
    deadline = time.monotonic() + WAIT_SECONDS
    while not await slots.acquire_slot("opening", "opener", 1, OPENING_LEASE):
        assert time.monotonic() < deadline, "the fresh store's grace never ended"
        await asyncio.sleep(0.005)
    await slots.release_slot("opening", "opener")
    return slots


async def _take_when_free(slots: Slots, scope: str, holder: str, limit: int, lease: float) -> float:
    """Ask for a slot every 20 ms until it is given; the seconds that took."""
    started = time.monotonic()
    while not await slots.acquire_slot(scope, holder, limit, lease):
        assert time.monotonic() - started < WAIT_SECONDS, f"{holder} never got a slot of {scope}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_scope_gives_at_most_its_limit_of_slots_and_a_holder_keeps_its_own(cache: Cache) -> None:
    slots = await _opened(cache)

    taken = [await slots.acquire_slot("agent:a", f"h{i}", 2, 30) for i in range(3)]
    again = await slots.acquire_slot("agent:a", "h0", 2, 30)
    other_scope = await slots.acquire_slot("agent:b", "h2", 2, 30)
    await slots.release_slot("agent:a", "h1")
    after_release = await slots.acquire_slot("agent:a", "h2", 2, 30)

    assert taken == [True, True, False]
    assert again is True
    assert other_scope is True
    assert after_release is True


async def test_asking_again_with_the_same_holder_keeps_one_slot(cache: Cache) -> None:
    # A taker whose call timed out after the store applied it asks again: one slot, not two.
    slots = await _opened(cache)

    twice = [await slots.acquire_slot("agent:again", "h", 2, 30) for _ in range(2)]
    others = [await slots.acquire_slot("agent:again", f"o{i}", 2, 30) for i in range(2)]

    assert twice == [True, True]
    assert others == [True, False]


async def test_a_lease_not_renewed_expires_for_a_taker_that_keeps_asking(cache: Cache) -> None:
    slots = await _opened(cache)
    assert await slots.acquire_slot("agent:exp", "dead", 1, 0.3)

    took = await _take_when_free(slots, "agent:exp", "alive", 1, 30)

    assert 0.25 <= took < 2.0, took


async def test_a_renewed_lease_is_kept(cache: Cache) -> None:
    slots = await _opened(cache)
    assert await slots.acquire_slot("agent:kept", "holder", 1, 0.3)

    renewals = []
    for _ in range(5):  # 0.5 s of a 0.3 s lease, renewed every 0.1 s, a taker asking between
        await asyncio.sleep(0.1)
        renewals.append(await slots.renew_slot("agent:kept", "holder", 1, 0.3))
        assert await slots.acquire_slot("agent:kept", "taker", 1, 0.3) is False

    assert renewals == [SlotRenewal.KEPT] * 5


async def test_a_holder_whose_place_was_taken_is_not_added_back_beyond_the_limit(cache: Cache) -> None:
    # Its process did not renew in time (starved of CPU): the taker runs, the limit holds, and
    # the old holder learns it must wait for a slot again (runtime/limits.py, the fence).
    slots = await _opened(cache)
    assert await slots.acquire_slot("agent:lost", "slow", 1, 0.3)
    await _take_when_free(slots, "agent:lost", "taker", 1, 30)

    renewed = await slots.renew_slot("agent:lost", "slow", 1, 30)
    again = await slots.renew_slot("agent:lost", "slow", 1, 30)
    await slots.release_slot("agent:lost", "taker")
    after_release = await slots.renew_slot("agent:lost", "slow", 1, 30)
    other = await slots.acquire_slot("agent:lost", "other", 1, 30)

    assert (renewed, again) == (SlotRenewal.LOST, SlotRenewal.LOST)  # not added: one holder at most
    assert after_release is SlotRenewal.BACK  # its place is free again: back in
    assert other is False  # and it counts


async def test_a_holder_whose_lease_ran_out_is_added_back_when_its_place_is_free(cache: Cache) -> None:
    slots = await _opened(cache)
    assert await slots.acquire_slot("agent:back", "slow", 2, 0.3)
    assert await slots.acquire_slot("agent:back", "steady", 2, 30)
    await _take_when_free(slots, "agent:back", "taker", 2, 30)  # in the place of the slow one, run out

    lost = await slots.renew_slot("agent:back", "slow", 2, 30)
    await slots.release_slot("agent:back", "steady")
    back = await slots.renew_slot("agent:back", "slow", 2, 30)
    kept = await slots.renew_slot("agent:back", "slow", 2, 30)
    third = await slots.acquire_slot("agent:back", "third", 2, 30)

    assert lost is SlotRenewal.LOST
    assert back is SlotRenewal.BACK
    assert kept is SlotRenewal.KEPT
    assert third is False  # the taker and the slow one hold the two slots


async def test_a_renewal_never_exceeds_the_limit_however_many_lost_holders_ask(cache: Cache) -> None:
    slots = await _opened(cache)
    for index in range(3):
        assert await slots.acquire_slot("agent:many", f"old{index}", 3, 0.3)
    for index in range(2):
        await _take_when_free(slots, "agent:many", f"new{index}", 3, 30)

    renewals = await asyncio.gather(*(slots.renew_slot("agent:many", f"old{i}", 3, 30) for i in range(3)))
    late = await slots.acquire_slot("agent:many", "late", 3, 30)

    assert sorted(renewals) == sorted([SlotRenewal.BACK] + [SlotRenewal.LOST] * 2)
    assert late is False


async def test_a_lease_does_not_run_out_while_nobody_calls_the_store(cache: Cache) -> None:
    # A store down (or paused) for everyone: no holder could renew, none is taken over.
    slots = await _opened(cache)
    assert await slots.acquire_slot("agent:silent", "holder", 1, 0.3)

    await asyncio.sleep(1.0)  # more than three leases without a call
    taker = await slots.acquire_slot("agent:silent", "taker", 1, 0.3)
    renewed = await slots.renew_slot("agent:silent", "holder", 1, 0.3)

    assert taker is False
    assert renewed is SlotRenewal.KEPT


async def test_releasing_a_slot_not_held_changes_nothing(cache: Cache) -> None:
    slots = await _opened(cache)
    assert await slots.acquire_slot("agent:rel", "holder", 1, 30)

    await slots.release_slot("agent:rel", "stranger")
    await slots.release_slot("agent:none", "stranger")

    assert await slots.acquire_slot("agent:rel", "taker", 1, 30) is False


async def test_concurrent_takers_of_the_last_slots_never_exceed_the_limit(cache: Cache) -> None:
    slots = await _opened(cache)

    taken = await asyncio.gather(*(slots.acquire_slot("agent:race", f"h{i}", 3, 30) for i in range(20)))

    assert sum(taken) == 3


# -- a Redis that lost its data (the Redis backend only: the in-process store cannot lose
# its data while its holders live, they are in the same process) ---------------------------


@pytest.fixture
async def redis_slots() -> AsyncIterator[tuple[RedisCache, str]]:
    """A RedisCache on the test Redis with a key prefix of its own (deleted afterwards)."""
    prefix = f"agentrunner-test:{uuid4().hex}:"
    cache = RedisCache(REDIS_URL, key_prefix=prefix)
    try:
        yield cache, prefix
    finally:
        await cache.close()
        await delete_redis_keys(prefix)


@pytest.mark.redis
async def test_a_fresh_redis_gives_no_slot_for_one_lease(redis_slots: tuple[RedisCache, str]) -> None:
    slots, _ = redis_slots

    first = await slots.acquire_slot("agent:fresh", "taker", 1, 0.5)
    took = await _take_when_free(slots, "agent:fresh", "taker", 1, 0.5)

    assert first is False
    assert 0.4 <= took < 3.0, took


@pytest.mark.redis
async def test_a_redis_that_lost_its_data_lets_its_holders_back_in_before_new_ones(
    redis_slots: tuple[RedisCache, str],
) -> None:
    slots, prefix = redis_slots
    await _opened(slots)
    assert await slots.acquire_slot("agent:lost", "running", 1, 0.5)

    await delete_redis_keys(prefix)  # what a restart without persistence leaves
    refused = await slots.acquire_slot("agent:lost", "newcomer", 2, 0.5)  # opens the grace
    added_back = await slots.renew_slot("agent:lost", "running", 2, 30)  # within the grace
    took = await _take_when_free(slots, "agent:lost", "newcomer", 2, 30)
    third = await slots.acquire_slot("agent:lost", "third", 2, 30)

    assert refused is False
    assert added_back is SlotRenewal.BACK  # it was gone, and is back
    assert 0.4 <= took < 3.0, took  # not before the grace of one lease ended
    assert third is False  # the holder that came back counts


# -- token buckets (ports.Buckets) ----------------------------------------------------


def _buckets(cache: Cache) -> Buckets:
    assert isinstance(cache, InMemoryCache | RedisCache)
    return cache


async def test_a_bucket_gives_a_seconds_worth_at_once_then_says_how_long_to_wait(cache: Cache) -> None:
    buckets = _buckets(cache)

    waits = [await buckets.take_tokens("rpm:a", 120, 1) for _ in range(3)]  # 2 a second
    await asyncio.sleep(0.55)
    later = await buckets.take_tokens("rpm:a", 120, 1)

    assert waits[:2] == [0.0, 0.0]
    assert 0.3 < waits[2] <= 0.51
    assert later == 0.0


async def test_a_debit_puts_the_bucket_in_debt_until_it_refills(cache: Cache) -> None:
    buckets = _buckets(cache)

    await buckets.debit_tokens("tpm:a", 60, 3)  # 1 a second, 1 kept: 1 - 3 = -2
    wait = await buckets.take_tokens("tpm:a", 60, 0)

    assert 1.5 < wait <= 2.05


async def test_concurrent_takers_share_only_what_the_bucket_holds(cache: Cache) -> None:
    buckets = _buckets(cache)

    waits = await asyncio.gather(*(buckets.take_tokens("rpm:race", 300, 1) for _ in range(20)))

    assert sum(wait == 0.0 for wait in waits) == 5
