"""Group commit: writes asked for while one is in flight go to the database together.

One caller alone is written at once, as before (no timer, no added wait). When fifty
invocations arrive at the same moment, the first is written alone and the next forty-nine
in ONE transaction: one commit (SQLite) or a few round trips (PostgreSQL) instead of
forty-nine, which is most of the cost of accepting them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from agentrunner.background import spawn

Item = TypeVar("Item")

# Outcomes of a batch, one per item in order: None when written, else the exception that
# item's caller raises.
WriteMany = Callable[[list[Item]], Awaitable[Sequence[BaseException | None]]]


class GroupCommit(Generic[Item]):
    """Runs `write_many` over the items submitted while the previous batch was written.

    `submit` returns when its item is written (or raises its exception). A caller that is
    cancelled while its batch is written does not take the write back (as with any write in
    flight); the others in its batch are not affected."""

    def __init__(self, write_many: WriteMany[Item], *, max_batch: int = 200) -> None:
        self._write_many = write_many
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None:
            self._flusher = spawn(self._flush(), name="group-commit")
        await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    outcomes: Sequence[BaseException | None] = await self._write_many([item for item, _ in batch])
                except asyncio.CancelledError:
                    for _, future in [*batch, *self._pending]:
                        future.cancel()
                    self._pending.clear()
                    raise
                except Exception as exc:  # noqa: BLE001 - not swallowed: every caller of the batch raises it
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # its caller was cancelled
                        continue
                    if outcome is None:
                        future.set_result(None)
                    else:
                        future.set_exception(outcome)
        finally:
            self._flusher = None
