"""The limits ports: concurrency slots and token buckets shared by every process."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class SlotRenewal(StrEnum):
    """What a renewal found: the holder's lease `kept`; the holder gone but its place free,
    so `back` in (the limit holds); or its place `lost` to another holder (not added)."""

    KEPT = "kept"
    BACK = "back"
    LOST = "lost"


class Slots(Protocol):
    """Concurrency slots shared by every process: at most `limit` holders of a scope at
    once, each lease expiring unless renewed (a dead holder frees its slot).

    Contract: a lease's time passes only while the store is called (by anyone: renewals,
    takers asking again); a stretch in which nobody reaches the store counts for at most
    half a lease, so leases do not run out while the store is down or paused for everyone,
    and its holders renew them when it answers again. The slots' clock never runs faster
    than real time (as the store's host measures it), so a lease taken or renewed by a call
    sent at some moment lasts at least `ttl_seconds` from that moment. A store that can lose its data while holders
    live (Redis restarted without persistence) fences: the first call that finds it empty
    (fresh or restarted) opens a grace of one lease (that call's `ttl_seconds`) in which new
    holders are refused while renewals (reclaims) succeed, so the running holders are back
    in before anyone new gets a slot. No call ever makes a scope hold more than `limit`.
    Raises `DependencyUnavailableError` when the store does not answer (the call may still
    have been applied: every method is idempotent for a holder, so trying again is safe).
    """

    async def acquire_slot(self, scope: str, holder: str, limit: int, ttl_seconds: float) -> bool:
        """Take (or keep) one of `scope`'s `limit` slots for `holder`; False when all are
        taken (or the store's grace after losing its data is on)."""
        ...

    async def renew_slot(self, scope: str, holder: str, limit: int, ttl_seconds: float) -> SlotRenewal:
        """Extend `holder`'s lease: `KEPT` when the holder still had its slot (its lease
        alive, or run out with nobody asking for a slot since). When it was gone (its lease
        ran out and a taker asked, or the store lost its data), the holder is added back if
        fewer than `limit` hold the scope, whatever the grace (it was running): `BACK`;
        otherwise it is not, and the answer is `LOST` (another holder has its place)."""
        ...

    async def release_slot(self, scope: str, holder: str) -> None:
        """Give the slot back (nothing when `holder` holds none)."""
        ...


class Buckets(Protocol):
    """Token buckets shared by every process: `per_minute` tokens a minute, smoothed (at
    most one second's worth at once), for request and token rate limits.

    Contract: raises `DependencyUnavailableError` when the store does not answer (the call
    may still have been applied: trying again errs on the side of fewer calls).
    """

    async def take_tokens(self, scope: str, per_minute: float, amount: float) -> float:
        """Take `amount` tokens (0: only check the bucket is not in debt); 0.0 when taken,
        else the seconds to wait before they are there (nothing taken)."""
        ...

    async def debit_tokens(self, scope: str, per_minute: float, amount: float) -> None:
        """Take `amount` tokens even into debt (tokens a call used; a vendor's Retry-After)."""
        ...
