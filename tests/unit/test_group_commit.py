"""GroupCommit: what arrives while a batch is written goes into the next batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from agentrunner.adapters.state.group_commit import GroupCommit


class Writer:
    """Records the batches; items named 'bad' fail alone, a batch with 'down' fails whole."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def write_many(self, items: list[str]) -> Sequence[BaseException | None]:
        self.batches.append(items)
        await self.release.wait()
        if "down" in items:
            raise ConnectionError("database down")
        return [ValueError(item) if item == "bad" else None for item in items]


async def test_one_caller_alone_is_written_at_once_in_a_batch_of_its_own() -> None:
    writer = Writer()
    commit = GroupCommit(writer.write_many)

    await commit.submit("a")
    await commit.submit("b")

    assert writer.batches == [["a"], ["b"]]


async def test_callers_arriving_while_a_batch_is_written_are_written_together_next() -> None:
    writer = Writer()
    writer.release.clear()
    commit = GroupCommit(writer.write_many)
    first = asyncio.create_task(commit.submit("first"))
    await asyncio.sleep(0.01)  # "first" is being written
    rest = [asyncio.create_task(commit.submit(f"item-{i}")) for i in range(5)]
    await asyncio.sleep(0.01)
    writer.release.set()

    await asyncio.gather(first, *rest)

    assert writer.batches == [["first"], [f"item-{i}" for i in range(5)]]


async def test_batches_are_capped() -> None:
    writer = Writer()
    writer.release.clear()
    commit = GroupCommit(writer.write_many, max_batch=2)
    tasks = [asyncio.create_task(commit.submit(str(i))) for i in range(5)]
    await asyncio.sleep(0.01)
    writer.release.set()

    await asyncio.gather(*tasks)

    assert writer.batches == [["0", "1"], ["2", "3"], ["4"]]


async def test_an_item_that_fails_fails_only_its_caller() -> None:
    writer = Writer()
    commit = GroupCommit(writer.write_many)

    results = await asyncio.gather(*(commit.submit(x) for x in ["a", "bad", "c"]), return_exceptions=True)

    assert [type(r).__name__ for r in results] == ["NoneType", "ValueError", "NoneType"]


async def test_a_batch_that_fails_fails_every_caller_in_it_and_the_next_batch_is_tried() -> None:
    writer = Writer()
    commit = GroupCommit(writer.write_many)

    results = await asyncio.gather(*(commit.submit(x) for x in ["down", "b"]), return_exceptions=True)
    await commit.submit("later")

    assert all(isinstance(r, ConnectionError) for r in results)
    assert writer.batches[-1] == ["later"]


async def test_a_caller_that_gives_up_leaves_the_others_written() -> None:
    writer = Writer()
    writer.release.clear()
    commit = GroupCommit(writer.write_many)
    tasks = [asyncio.create_task(commit.submit(x)) for x in ["a", "b", "c"]]
    await asyncio.sleep(0.01)
    tasks[1].cancel()
    writer.release.set()

    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], asyncio.CancelledError)
    assert writer.batches == [["a", "b", "c"]]


async def test_cancelling_the_writer_cancels_the_callers_instead_of_leaving_them_waiting() -> None:
    writer = Writer()
    writer.release.clear()
    commit = GroupCommit(writer.write_many)
    tasks = [asyncio.create_task(commit.submit(x)) for x in ["a", "b"]]
    await asyncio.sleep(0.01)
    flusher = next(t for t in asyncio.all_tasks() if t.get_name() == "group-commit")
    flusher.cancel()

    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert flusher.cancelled()
    writer.release.set()
    await commit.submit("after")  # a new writer starts
    assert writer.batches[-1] == ["after"]
