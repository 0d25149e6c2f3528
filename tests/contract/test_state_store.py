"""StateStore contract: what every backend (SQLite, PostgreSQL, either behind a cache) must do the same way."""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypedDict

import pytest

from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.domain.errors import (
    AgentRunnerError,
    BadRequestError,
    ConflictError,
    DeadLetterNotFoundError,
    DependencyUnavailableError,
    ExecutionNotFoundError,
)
from agentrunner.domain.event import DeadLetter, Event
from agentrunner.domain.execution import (
    Execution,
    ExecutionError,
    ExecutionStatus,
    FailedCheck,
    ToolCallRecord,
    Usage,
)
from agentrunner.domain.webhook import WebhookAttempt, WebhookDelivery
from agentrunner.ports.state import IdempotencyClaim, IdempotencyKeyTakenError, StateStore
from tests.ports import free_port

BASE_TIME = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _execution(execution_id: str, *, agent: str = "writer", seconds: float = 0, **fields: Any) -> Execution:
    return Execution.model_validate(
        {
            "execution_id": execution_id,
            "agent": agent,
            "trace_id": f"trace-{execution_id}",
            "created_at": BASE_TIME + timedelta(seconds=seconds),
            **fields,
        }
    )


def full_execution(execution_id: str = "exec-full", **overrides: Any) -> Execution:
    fields: dict[str, Any] = {
        "status": ExecutionStatus.FAILED,
        "input": {"task": "résumé ✓", "nested": {"n": [1, 2.5, None, True]}, "empty": {}},
        "session_id": "session-42",
        "output": "partial answer\nwith two lines",
        "error": ExecutionError(code="llm_unavailable", message="the provider timed out"),
        "usage": Usage(input_tokens=1234, output_tokens=567),
        "cost_usd": 0.0123,
        "attempts": 3,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "started_at": BASE_TIME + timedelta(seconds=1, microseconds=7),
        "finished_at": BASE_TIME + timedelta(seconds=2, microseconds=999999),
    }
    fields.update(overrides)
    return _execution(execution_id, **fields)


def _assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.tzinfo is not None, f"{value!r} came back naive"
    assert value.utcoffset() == timedelta(0), f"{value!r} came back outside UTC"


async def _all_pages(store: StateStore, *, limit: int, agent: str | None = None) -> list[list[Execution]]:
    pages: list[list[Execution]] = []
    cursor: str | None = None
    for _ in range(100):  # a bound, so a cursor that never ends fails instead of hanging
        page = await store.list_executions(agent=agent, limit=limit, cursor=cursor)
        pages.append(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return pages
    raise AssertionError("pagination did not end after 100 pages")


# -- create / get ---------------------------------------------------------------------------


async def test_create_then_get_returns_every_field_unchanged(state_store: StateStore) -> None:
    original = full_execution()

    await state_store.create_execution(original)
    stored = await state_store.get_execution(original.execution_id)

    assert stored == original
    assert stored.model_dump() == original.model_dump()
    for moment in (stored.created_at, stored.started_at, stored.finished_at):
        _assert_utc(moment)
    assert stored.usage == Usage(input_tokens=1234, output_tokens=567)
    assert stored.error == ExecutionError(code="llm_unavailable", message="the provider timed out")


@pytest.mark.parametrize("parsed", [{"total": 12.5, "lines": [{"sku": "a", "n": 2}]}, ["a", 1], "text", 0, False])
async def test_a_parsed_answer_comes_back_as_the_same_json_value(state_store: StateStore, parsed: Any) -> None:
    original = full_execution(status=ExecutionStatus.SUCCEEDED, error=None, output="{}", output_json=parsed)

    await state_store.create_execution(original)
    stored = await state_store.get_execution(original.execution_id)

    assert stored.output_json == parsed
    assert type(stored.output_json) is type(parsed)


async def test_the_checks_an_end_failed_are_saved_with_it(state_store: StateStore) -> None:
    running = _execution("exec-checked", status=ExecutionStatus.RUNNING)
    failed = [
        FailedCheck(check="has-order", kind="contains", detail="the output does not contain 'order'"),
        FailedCheck(check="regex", kind="regex", detail="the output does not match '^x'"),
    ]
    ended = running.model_copy(update={"status": ExecutionStatus.SUCCEEDED, "output": "no", "failed_checks": failed})
    await state_store.create_execution(running)

    await state_store.save_execution(ended, only_if=frozenset({ExecutionStatus.RUNNING}))
    stored = await state_store.get_execution("exec-checked")

    assert stored.failed_checks == failed


async def test_create_then_get_keeps_defaults_and_nones(state_store: StateStore) -> None:
    original = _execution("exec-minimal")

    await state_store.create_execution(original)
    stored = await state_store.get_execution("exec-minimal")

    assert stored == original
    assert stored.status is ExecutionStatus.QUEUED
    assert stored.input == {}
    assert stored.error is None
    assert stored.usage == Usage()
    assert (stored.session_id, stored.output, stored.provider, stored.model) == (None, None, None, None)
    assert (stored.started_at, stored.finished_at) == (None, None)
    _assert_utc(stored.created_at)


@pytest.mark.parametrize("cost", [None, 0.0], ids=["unknown-cost", "zero-cost"])
async def test_unknown_cost_and_zero_cost_stay_distinct(state_store: StateStore, cost: float | None) -> None:
    await state_store.create_execution(_execution("exec-cost", cost_usd=cost))

    stored = await state_store.get_execution("exec-cost")

    if cost is None:
        assert stored.cost_usd is None
    else:
        assert stored.cost_usd is not None
        assert stored.cost_usd == 0.0


async def test_datetimes_in_another_zone_come_back_as_the_same_instant_in_utc(state_store: StateStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    created = datetime(2024, 5, 1, 14, 30, 0, 250000, tzinfo=plus_two)

    await state_store.create_execution(_execution("exec-zone", created_at=created, started_at=created))
    stored = await state_store.get_execution("exec-zone")

    assert stored.created_at == created
    assert stored.created_at == datetime(2024, 5, 1, 12, 30, 0, 250000, tzinfo=UTC)
    _assert_utc(stored.created_at)
    _assert_utc(stored.started_at)


async def test_get_unknown_id_raises_execution_not_found(state_store: StateStore) -> None:
    with pytest.raises(ExecutionNotFoundError, match="no-such-execution"):
        await state_store.get_execution("no-such-execution")


async def test_create_with_a_duplicate_id_is_refused_and_keeps_the_original(state_store: StateStore) -> None:
    await state_store.create_execution(_execution("exec-dup", agent="first"))

    with pytest.raises(AgentRunnerError, match="exec-dup"):
        await state_store.create_execution(_execution("exec-dup", agent="second"))

    assert (await state_store.get_execution("exec-dup")).agent == "first"
    assert [e.execution_id for e in (await state_store.list_executions()).items] == ["exec-dup"]


# -- save -----------------------------------------------------------------------------------


async def test_save_execution_replaces_the_stored_execution(state_store: StateStore) -> None:
    queued = _execution("exec-save")
    await state_store.create_execution(queued)
    finished = queued.model_copy(
        update={
            "status": ExecutionStatus.SUCCEEDED,
            "output": "done",
            "usage": Usage(input_tokens=10, output_tokens=20),
            "cost_usd": 0.5,
            "attempts": 1,
            "provider": "openai",
            "model": "gpt-4o",
            "started_at": BASE_TIME + timedelta(seconds=1),
            "finished_at": BASE_TIME + timedelta(seconds=3),
        }
    )

    await state_store.save_execution(finished)
    stored = await state_store.get_execution("exec-save")

    assert stored == finished
    _assert_utc(stored.finished_at)
    assert len((await state_store.list_executions()).items) == 1


async def test_the_origin_the_slack_gateway_records_is_kept_through_every_save(state_store: StateStore) -> None:
    origin = {"kind": "slack", "response_url": "https://hooks.slack.com/commands/1/2", "channel_id": "C1"}
    queued = _execution("exec-origin", origin=origin)
    await state_store.create_execution(queued)
    finished = queued.model_copy(update={"status": ExecutionStatus.SUCCEEDED, "output": "ok"})
    await state_store.save_execution(finished)

    stored = await state_store.get_execution("exec-origin")

    assert stored.origin == origin
    assert stored.slack_origin == origin
    assert (await state_store.get_execution("exec-origin")).model_copy(update={"origin": None}).slack_origin is None


async def test_tool_calls_are_kept_with_the_execution(state_store: StateStore) -> None:
    queued = _execution("exec-tools")
    await state_store.create_execution(queued)
    calls = [
        ToolCallRecord(
            call_id="call_1",
            name="kb__search",
            arguments={"q": "refund ✓", "filters": {"lang": ["fr", "en"], "limit": 3}},
            result='{"hits": 2}',
            started_at=BASE_TIME,
            finished_at=BASE_TIME + timedelta(milliseconds=250),
            duration_ms=250.0,
        ),
        ToolCallRecord(
            call_id="call_2",
            name="kb__slow",
            error="timed out after 30 s",
            iteration=2,
            started_at=BASE_TIME + timedelta(seconds=1),
            finished_at=BASE_TIME + timedelta(seconds=31),
            duration_ms=30000.5,
        ),
    ]
    finished = queued.model_copy(update={"status": ExecutionStatus.SUCCEEDED, "output": "ok", "tool_calls": calls})

    await state_store.save_execution(finished)
    stored = await state_store.get_execution("exec-tools")
    listed = (await state_store.list_executions()).items

    assert stored == finished
    assert stored.tool_calls[1].error == "timed out after 30 s"
    assert listed[0].tool_calls == calls
    assert (await state_store.get_execution("exec-tools")).tool_calls == calls  # from the cache too, where there is one


async def test_save_execution_can_clear_optional_fields(state_store: StateStore) -> None:
    await state_store.create_execution(full_execution("exec-clear"))
    cleared = _execution("exec-clear", status=ExecutionStatus.RUNNING)

    await state_store.save_execution(cleared)

    assert await state_store.get_execution("exec-clear") == cleared


async def test_save_unknown_execution_raises_not_found_and_creates_nothing(state_store: StateStore) -> None:
    with pytest.raises(ExecutionNotFoundError, match="exec-ghost"):
        await state_store.save_execution(_execution("exec-ghost"))

    with pytest.raises(ExecutionNotFoundError):
        await state_store.get_execution("exec-ghost")


# -- start: one more attempt, atomically ---------------------------------------------------


async def test_start_moves_a_queued_execution_to_running_and_counts_the_attempt(state_store: StateStore) -> None:
    queued = _execution("exec-start", input={"prompt": "hi"})
    await state_store.create_execution(queued)

    started = await state_store.start_execution("exec-start", worker="w-1", provider="openai", model="gpt-4o")

    assert (started.status, started.attempts, started.worker) == (ExecutionStatus.RUNNING, 1, "w-1")
    assert (started.provider, started.model, started.input) == ("openai", "gpt-4o", {"prompt": "hi"})
    assert started.started_at is not None
    _assert_utc(started.started_at)
    assert await state_store.get_execution("exec-start") == started


async def test_a_started_execution_is_returned_as_it_is_read_back_every_field_included(
    state_store: StateStore,
) -> None:
    # The start's row comes back from the statement itself (on PostgreSQL without
    # SQLAlchemy's result handling): every type must read as a later read gives it.
    queued = full_execution(
        "exec-start-full",
        status=ExecutionStatus.QUEUED,
        error=None,
        finished_at=None,
        started_at=None,
        tenant="acme",
        origin={"kind": "slack", "channel": "C1", "big": 2**70},
        chain_depth=2,
        agent_version=3,
        tool_calls=[
            ToolCallRecord(
                call_id="c1",
                name="search",
                arguments={"q": "ü"},
                result="2 hits",
                started_at=BASE_TIME,
                finished_at=BASE_TIME,
                duration_ms=3.5,
            )
        ],
        webhook_url="https://example.com/hook",
        output_json={"answer": [1.5, None, "x"]},
    )
    await state_store.create_execution(queued)

    started = await state_store.start_execution("exec-start-full", worker="w-1", provider="openai", model="gpt-4o")

    assert started == await state_store.get_execution("exec-start-full")
    assert (started.tenant, started.origin, started.cost_usd) == ("acme", queued.origin, queued.cost_usd)
    _assert_utc(started.created_at)


async def test_starting_again_counts_another_attempt_and_keeps_the_first_start_time(state_store: StateStore) -> None:
    await state_store.create_execution(_execution("exec-again"))
    first = await state_store.start_execution("exec-again", worker="w-1", provider="echo", model="echo")

    second = await state_store.start_execution("exec-again", worker="w-2", provider="echo", model="echo")

    assert (second.attempts, second.worker, second.started_at) == (2, "w-2", first.started_at)


@pytest.mark.parametrize(
    "status",
    [ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED, ExecutionStatus.TIMED_OUT],
)
async def test_an_ended_execution_cannot_start_and_stays_as_it_is(
    state_store: StateStore, status: ExecutionStatus
) -> None:
    ended = _execution("exec-ended", status=status)
    await state_store.create_execution(ended)

    with pytest.raises(ConflictError, match=status.value):
        await state_store.start_execution("exec-ended", worker="w-1", provider="echo", model="echo")

    assert await state_store.get_execution("exec-ended") == ended


async def test_starting_an_unknown_execution_raises_not_found(state_store: StateStore) -> None:
    with pytest.raises(ExecutionNotFoundError, match="exec-nobody"):
        await state_store.start_execution("exec-nobody", worker="w-1", provider="echo", model="echo")


# -- outbox: events written with the change that caused them -------------------------------


def _events(*topics: str) -> list[Event]:
    return [
        Event(topic=topic, payload={"n": n, "text": "ünïcode"}, trace_id="t-outbox") for n, topic in enumerate(topics)
    ]


async def _pending(store: StateStore) -> list[Event]:
    """Unpublished events, by topic (the events of one write share their creation time)."""
    return sorted((entry.event for entry in await store.pending_events(limit=100)), key=lambda e: e.topic)


async def test_create_appends_its_events_to_the_outbox_until_marked_published(state_store: StateStore) -> None:
    events = _events("audit.created", "invoke.writer")

    await state_store.create_execution(_execution("exec-out"), events=events)
    pending = await _pending(state_store)
    await state_store.mark_published([events[0].event_id])
    after_one = await _pending(state_store)
    await state_store.mark_published([events[1].event_id, events[1].event_id, "unknown-id"])

    assert pending == events
    assert after_one == events[1:]
    assert await _pending(state_store) == []
    assert (await state_store.get_execution("exec-out")).status is ExecutionStatus.QUEUED


async def test_a_refused_create_appends_no_event(state_store: StateStore) -> None:
    first = _events("invoke.writer")
    await state_store.create_execution(_execution("exec-twice"), events=first)

    with pytest.raises(ConflictError):
        await state_store.create_execution(_execution("exec-twice", agent="other"), events=_events("invoke.other"))

    assert await _pending(state_store) == first


async def test_concurrent_creates_are_each_written_with_their_events_and_only_a_duplicate_fails(
    state_store: StateStore,
) -> None:
    """Creates that arrive together (written as one batch by the SQL store) stay
    independent: each is stored with its own outbox events, and an id that exists already
    fails alone, appending nothing."""
    await state_store.create_execution(_execution("exec-batch-taken"))
    ids = [f"exec-batch-{i:02d}" for i in range(40)]
    events = {execution_id: _events(f"invoke.{execution_id}") for execution_id in [*ids, "exec-batch-taken"]}

    async def create(execution_id: str) -> BaseException | None:
        try:
            await state_store.create_execution(_execution(execution_id), events=events[execution_id])
        except ConflictError as exc:
            return exc
        return None

    outcomes = await asyncio.gather(*(create(i) for i in [*ids[:20], "exec-batch-taken", *ids[20:]]))

    assert [type(o).__name__ for o in outcomes if o is not None] == ["ConflictError"]
    assert "exec-batch-taken" in str(outcomes[20])
    for execution_id in ids:
        assert (await state_store.get_execution(execution_id)).status is ExecutionStatus.QUEUED
    pending = await state_store.pending_events(limit=100)
    assert sorted(entry.event.event_id for entry in pending) == sorted(
        event.event_id for execution_id in ids for event in events[execution_id]
    )


async def test_a_create_whose_caller_gave_up_does_not_fail_the_others(state_store: StateStore) -> None:
    async def create(execution_id: str) -> None:
        await state_store.create_execution(_execution(execution_id))

    tasks = [asyncio.create_task(create(f"exec-cancel-{i}")) for i in range(10)]
    await asyncio.sleep(0)
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert [i for i, r in enumerate(results) if r is not None] in ([], [3])
    for i in [0, 1, 2, 4, 5, 6, 7, 8, 9]:
        assert (await state_store.get_execution(f"exec-cancel-{i}")).status is ExecutionStatus.QUEUED


async def test_a_conditional_save_writes_and_appends_only_from_an_allowed_status(state_store: StateStore) -> None:
    queued = _execution("exec-cond")
    await state_store.create_execution(queued)
    running = queued.model_copy(update={"status": ExecutionStatus.RUNNING, "attempts": 1})
    finished = running.model_copy(update={"status": ExecutionStatus.SUCCEEDED, "output": "done"})
    started = _events("execution.progress.writer")
    late = _events("execution.progress.writer")
    only_queued = frozenset({ExecutionStatus.QUEUED})

    await state_store.save_execution(running, events=started, only_if=only_queued)
    await state_store.save_execution(finished, only_if=frozenset({ExecutionStatus.RUNNING}))
    with pytest.raises(ConflictError, match="succeeded"):
        await state_store.save_execution(running, events=late, only_if=only_queued)

    assert await state_store.get_execution("exec-cond") == finished
    assert await _pending(state_store) == started


async def test_saving_an_unknown_execution_appends_no_event(state_store: StateStore) -> None:
    with pytest.raises(ExecutionNotFoundError):
        await state_store.save_execution(_execution("exec-none"), events=_events("execution.finished.writer"))

    assert await _pending(state_store) == []


async def test_pending_events_can_skip_the_recent_ones(state_store: StateStore) -> None:
    await state_store.create_execution(_execution("exec-recent"), events=_events("invoke.writer"))

    assert await state_store.pending_events(older_than_seconds=60) == []
    assert len(await state_store.pending_events(older_than_seconds=0)) == 1


# -- list -----------------------------------------------------------------------------------


async def test_list_returns_newest_first_whatever_the_insertion_order(state_store: StateStore) -> None:
    seconds = list(range(8))
    random.Random(7).shuffle(seconds)
    for second in seconds:
        await state_store.create_execution(_execution(f"exec-{second}", seconds=second))

    page = await state_store.list_executions()

    assert [e.execution_id for e in page.items] == [f"exec-{s}" for s in range(7, -1, -1)]
    assert page.next_cursor is None


async def test_list_on_an_empty_store_is_an_empty_last_page(state_store: StateStore) -> None:
    page = await state_store.list_executions()

    assert page.items == []
    assert page.next_cursor is None


async def test_list_filters_by_agent_by_status_and_by_both(state_store: StateStore) -> None:
    rows = [
        ("e1", "writer", ExecutionStatus.QUEUED),
        ("e2", "writer", ExecutionStatus.SUCCEEDED),
        ("e3", "critic", ExecutionStatus.SUCCEEDED),
        ("e4", "critic", ExecutionStatus.FAILED),
        ("e5", "writer", ExecutionStatus.SUCCEEDED),
    ]
    for second, (execution_id, agent, status) in enumerate(rows):
        await state_store.create_execution(_execution(execution_id, agent=agent, status=status, seconds=second))

    by_agent = await state_store.list_executions(agent="writer")
    by_status = await state_store.list_executions(status=ExecutionStatus.SUCCEEDED)
    by_both = await state_store.list_executions(agent="critic", status=ExecutionStatus.SUCCEEDED)
    nothing = await state_store.list_executions(agent="nobody")

    assert [e.execution_id for e in by_agent.items] == ["e5", "e2", "e1"]
    assert [e.execution_id for e in by_status.items] == ["e5", "e3", "e2"]
    assert [e.execution_id for e in by_both.items] == ["e3"]
    assert nothing.items == []
    assert all(page.next_cursor is None for page in (by_agent, by_status, by_both, nothing))


async def test_cursor_pagination_returns_every_execution_once_newest_first(state_store: StateStore) -> None:
    for second in random.Random(25).sample(range(25), 25):
        await state_store.create_execution(_execution(f"exec-{second:02d}", seconds=second))

    pages = await _all_pages(state_store, limit=10)

    assert [len(page) for page in pages] == [10, 10, 5]
    assert [e.execution_id for page in pages for e in page] == [f"exec-{s:02d}" for s in range(24, -1, -1)]


async def test_cursor_pagination_ends_without_an_empty_page_when_the_last_page_is_full(
    state_store: StateStore,
) -> None:
    for second in range(20):
        await state_store.create_execution(_execution(f"exec-{second:02d}", seconds=second))

    pages = await _all_pages(state_store, limit=10)

    assert [len(page) for page in pages] == [10, 10]


async def test_cursor_pagination_neither_skips_nor_repeats_executions_created_at_the_same_instant(
    state_store: StateStore,
) -> None:
    # Groups of four share one created_at, and pages of three cut through every group.
    ids = [f"exec-{i:02d}" for i in range(16)]
    for i, execution_id in enumerate(ids):
        await state_store.create_execution(_execution(execution_id, seconds=i // 4))

    pages = await _all_pages(state_store, limit=3)
    listed = [e for page in pages for e in page]

    assert sorted(e.execution_id for e in listed) == ids
    assert len(listed) == len(ids)
    assert all(a.created_at >= b.created_at for a, b in itertools.pairwise(listed))


async def test_cursor_pagination_keeps_the_filters(state_store: StateStore) -> None:
    for i in range(12):
        agent = "writer" if i % 2 == 0 else "critic"
        await state_store.create_execution(_execution(f"exec-{i:02d}", agent=agent, seconds=i))

    pages = await _all_pages(state_store, limit=4, agent="writer")

    assert [len(page) for page in pages] == [4, 2]
    assert [e.execution_id for page in pages for e in page] == [f"exec-{i:02d}" for i in (10, 8, 6, 4, 2, 0)]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("not a cursor!!", id="not-base64"),
        pytest.param(_b64(b"no separator"), id="no-separator"),
        pytest.param(_b64(b"yesterday|exec-1"), id="not-a-datetime"),
        pytest.param(_b64(b"\xff\xfe\xfd"), id="not-utf8"),
        pytest.param(_b64(b"2024-05-01T12:00:00|exec-1"), id="naive-datetime"),
    ],
)
async def test_invalid_cursor_raises_bad_request(state_store: StateStore, cursor: str) -> None:
    await state_store.create_execution(_execution("exec-1"))

    with pytest.raises(BadRequestError, match="cursor"):
        await state_store.list_executions(cursor=cursor)


# -- lifecycle ------------------------------------------------------------------------------


async def test_ping_succeeds_on_a_started_store(state_store: StateStore) -> None:
    await state_store.ping()


async def test_ping_before_start_raises_dependency_unavailable(
    state_store_factory: Callable[[], StateStore],
) -> None:
    store = state_store_factory()

    with pytest.raises(DependencyUnavailableError):
        await store.ping()


async def test_ping_after_close_raises_dependency_unavailable(
    state_store_factory: Callable[[], StateStore],
) -> None:
    store = state_store_factory()
    await store.start()
    await store.ping()

    await store.close()

    with pytest.raises(DependencyUnavailableError):
        await store.ping()


async def test_start_against_a_closed_port_raises_dependency_unavailable() -> None:
    store = SQLStateStore(f"postgresql+asyncpg://postgres:postgres@127.0.0.1:{free_port()}/x")
    try:
        with pytest.raises(DependencyUnavailableError, match="not reachable") as raised:
            await store.start()
        assert "postgres:postgres@" not in str(raised.value), "the error message leaks the password"
    finally:
        await store.close()


async def test_writes_survive_close_and_reopen(state_store_factory: Callable[[], StateStore]) -> None:
    original = full_execution("exec-durable")
    first = state_store_factory()
    await first.start()
    await first.create_execution(original)
    await first.close()

    reopened = state_store_factory()
    await reopened.start()

    assert await reopened.get_execution("exec-durable") == original
    assert [e.execution_id for e in (await reopened.list_executions()).items] == ["exec-durable"]


async def test_start_is_idempotent_on_an_existing_schema(state_store_factory: Callable[[], StateStore]) -> None:
    first = state_store_factory()
    await first.start()
    await first.create_execution(_execution("exec-kept"))
    second = state_store_factory()

    await second.start()

    assert (await second.get_execution("exec-kept")).execution_id == "exec-kept"


async def test_operations_after_close_raise_dependency_unavailable(
    state_store_factory: Callable[[], StateStore],
) -> None:
    store = state_store_factory()
    await store.start()
    await store.create_execution(_execution("exec-1"))
    await store.close()

    with pytest.raises(DependencyUnavailableError):
        await store.get_execution("exec-1")
    with pytest.raises(DependencyUnavailableError):
        await store.list_executions()


async def test_duplicate_id_is_a_conflict(state_store: StateStore) -> None:
    await state_store.create_execution(_execution("exec-1"))

    with pytest.raises(ConflictError, match="exec-1"):
        await state_store.create_execution(_execution("exec-1"))


async def test_limit_below_one_is_a_bad_request(state_store: StateStore) -> None:
    with pytest.raises(BadRequestError, match="limit"):
        await state_store.list_executions(limit=0)


# -- dead letters ---------------------------------------------------------------------------


def _letter(queue: str = "agent.a", event_id: str = "ev-1", error: str = "boom") -> DeadLetter:
    event = Event(event_id=event_id, topic="invoke.a", payload={"execution_id": "x"}, trace_id="t-dead", attempt=5)
    return DeadLetter(queue=queue, event=event, error=error)


async def test_dead_letters_are_recorded_listed_and_fetched(state_store: StateStore) -> None:
    letter = _letter(event_id="ev-1")
    first = await state_store.record_dead_letter(letter)
    second = await state_store.record_dead_letter(_letter(event_id="ev-2", error="worse"))

    listed = await state_store.list_dead_letters()
    fetched = await state_store.get_dead_letter(first.id)

    assert {letter.id for letter in listed} == {first.id, second.id}
    assert fetched.event == letter.event
    assert (fetched.queue, fetched.topic, fetched.error, fetched.attempts) == ("agent.a", "invoke.a", "boom", 5)
    assert fetched.replayed_at is None


async def test_the_same_event_dead_again_in_the_same_queue_replaces_its_record(state_store: StateStore) -> None:
    first = await state_store.record_dead_letter(_letter(error="first error"))
    again = await state_store.record_dead_letter(_letter(error="second error"))
    other_queue = await state_store.record_dead_letter(_letter(queue="agent.b"))

    assert again.id == first.id
    assert other_queue.id != first.id
    assert (await state_store.get_dead_letter(first.id)).error == "second error"
    assert len(await state_store.list_dead_letters()) == 2


async def test_replayed_dead_letters_leave_the_default_listing(state_store: StateStore) -> None:
    letter = await state_store.record_dead_letter(_letter())

    replayed = await state_store.mark_dead_letter_replayed(letter.id)

    assert replayed.replayed_at is not None
    assert await state_store.list_dead_letters() == []
    assert [d.id for d in await state_store.list_dead_letters(include_replayed=True)] == [letter.id]


async def test_a_deleted_dead_letter_is_gone(state_store: StateStore) -> None:
    stored = await state_store.record_dead_letter(
        DeadLetter(queue="agent.writer", event=Event(topic="invoke.writer", trace_id="t"), error="boom")
    )

    await state_store.delete_dead_letter(stored.id)

    assert await state_store.list_dead_letters(include_replayed=True) == []
    with pytest.raises(DeadLetterNotFoundError):
        await state_store.delete_dead_letter(stored.id)


async def test_unknown_dead_letter_raises_not_found(state_store: StateStore) -> None:
    with pytest.raises(DeadLetterNotFoundError):
        await state_store.get_dead_letter("nope")
    with pytest.raises(DeadLetterNotFoundError):
        await state_store.mark_dead_letter_replayed("nope")


# -- idempotency keys -----------------------------------------------------------------


class _Windows(TypedDict):
    """The keyword arguments of `claim_idempotency_key` that say which earlier claims lapsed."""

    expired_before: datetime
    abandoned_before: datetime


def _windows(now: datetime | None = None) -> _Windows:
    now = now or datetime.now(UTC)
    return {"expired_before": now - timedelta(hours=24), "abandoned_before": now - timedelta(seconds=30)}


async def test_the_first_claim_of_an_idempotency_key_owns_it_and_later_ones_see_it_running(
    state_store: StateStore,
) -> None:
    assert await state_store.claim_idempotency_key("key-1", "fp-a", **_windows()) is None

    running = await state_store.claim_idempotency_key("key-1", "fp-a", **_windows())
    other_body = await state_store.claim_idempotency_key("key-1", "fp-b", **_windows())

    assert running is not None
    assert running.fingerprint == "fp-a"
    assert running.status_code is None
    assert other_body is not None
    assert other_body.fingerprint == "fp-a"  # the caller compares and refuses


async def test_a_completed_idempotency_key_gives_its_answer_back_byte_for_byte(state_store: StateStore) -> None:
    answer = '{"execution_id": "e-1", "text": "ünïcode"}'.encode()
    await state_store.claim_idempotency_key("key-2", "fp", **_windows())
    await state_store.complete_idempotency_key("key-2", 202, answer, "application/json")

    earlier = await state_store.claim_idempotency_key("key-2", "fp", **_windows())

    assert earlier is not None
    assert (earlier.status_code, earlier.response, earlier.content_type) == (202, answer, "application/json")


async def test_a_released_expired_or_abandoned_idempotency_key_is_claimed_anew(state_store: StateStore) -> None:
    await state_store.claim_idempotency_key("released", "fp", **_windows())
    await state_store.release_idempotency_key("released")
    await state_store.claim_idempotency_key("expired", "fp", **_windows())
    await state_store.complete_idempotency_key("expired", 200, b"{}", "application/json")
    await state_store.claim_idempotency_key("abandoned", "fp", **_windows())
    await state_store.claim_idempotency_key("alive", "fp", **_windows())
    later = datetime.now(UTC) + timedelta(seconds=31)
    await state_store.touch_idempotency_key("alive")  # touched now; "abandoned" was not

    assert await state_store.claim_idempotency_key("released", "fp-new", **_windows()) is None
    assert await state_store.claim_idempotency_key("expired", "fp-new", **_windows(later + timedelta(days=1))) is None
    assert await state_store.claim_idempotency_key("abandoned", "fp-new", **_windows(later)) is None
    alive = await state_store.claim_idempotency_key("alive", "fp-new", **_windows(later - timedelta(seconds=2)))
    assert alive is not None
    assert alive.fingerprint == "fp"


async def test_concurrent_claims_of_one_idempotency_key_have_exactly_one_owner(state_store: StateStore) -> None:
    claims = await asyncio.gather(*(state_store.claim_idempotency_key("raced", "fp", **_windows()) for _ in range(20)))

    assert sum(claim is None for claim in claims) == 1


def _recent(execution_id: str) -> Execution:
    """An execution created now (an invocation's key expires 24 h after its execution)."""
    return _execution(execution_id, created_at=datetime.now(UTC))


def _claim(key: str, fingerprint: str = "fp", now: datetime | None = None) -> IdempotencyClaim:
    return IdempotencyClaim(key=key, fingerprint=fingerprint, expired_before=_windows(now)["expired_before"])


async def test_a_key_recorded_with_its_execution_names_it_and_a_second_execution_is_not_recorded(
    state_store: StateStore,
) -> None:
    event = Event(topic="invoke.writer", payload={"n": 1}, trace_id="t-key")
    await state_store.create_execution(_recent("keyed-1"), events=[event], idempotency=_claim("inv-1"))

    with pytest.raises(IdempotencyKeyTakenError) as taken:
        await state_store.create_execution(
            _recent("keyed-2"),
            events=[Event(topic="invoke.writer", payload={"n": 2}, trace_id="t-key")],
            idempotency=_claim("inv-1", "fp-other"),
        )

    assert taken.value.earlier.execution_id == "keyed-1"
    assert taken.value.earlier.fingerprint == "fp"  # the caller compares and refuses
    with pytest.raises(ExecutionNotFoundError):
        await state_store.get_execution("keyed-2")
    assert [entry.event.payload for entry in await state_store.pending_events(older_than_seconds=0)] == [{"n": 1}]
    found = await state_store.keyed_invocation("inv-1", expired_before=_claim("inv-1").expired_before)
    assert found is not None
    assert found.execution_id == "keyed-1"


async def test_an_expired_key_is_recorded_anew_with_its_new_execution(state_store: StateStore) -> None:
    await state_store.create_execution(_recent("old-run"), idempotency=_claim("inv-2"))
    a_day_later = datetime.now(UTC) + timedelta(days=1, seconds=1)

    assert await state_store.keyed_invocation("inv-2", expired_before=a_day_later - timedelta(hours=24)) is None
    await state_store.create_execution(_recent("new-run"), idempotency=_claim("inv-2", now=a_day_later))

    found = await state_store.keyed_invocation("inv-2", expired_before=_claim("inv-2").expired_before)
    assert found is not None
    assert found.execution_id == "new-run"
    assert (await state_store.get_execution("new-run")).execution_id == "new-run"


async def test_concurrent_creates_with_one_key_record_exactly_one_execution(state_store: StateStore) -> None:
    results = await asyncio.gather(
        *(state_store.create_execution(_recent(f"race-{n}"), idempotency=_claim("inv-3")) for n in range(10)),
        return_exceptions=True,
    )

    recorded = [n for n, result in enumerate(results) if result is None]
    assert len(recorded) == 1
    taken = [result for result in results if isinstance(result, IdempotencyKeyTakenError)]
    assert len(taken) == 9
    assert {t.earlier.execution_id for t in taken} == {f"race-{recorded[0]}"}
    assert (await state_store.list_executions()).items[0].execution_id == f"race-{recorded[0]}"
    assert len((await state_store.list_executions()).items) == 1


# -- webhook deliveries ---------------------------------------------------------------


async def test_a_webhook_delivery_is_claimed_once_when_due_and_keeps_its_attempts(state_store: StateStore) -> None:
    now = datetime.now(UTC)
    delivery = WebhookDelivery(execution_id="exec-hook", url="http://hooks.test/x", created_at=now, next_attempt_at=now)
    await state_store.add_webhook_delivery(delivery)
    await state_store.add_webhook_delivery(delivery.model_copy(update={"url": "http://other.test"}))  # no change

    due = await state_store.due_webhook_deliveries(now=now)
    first = await state_store.claim_webhook_delivery("exec-hook", now=now, lease_until=now + timedelta(seconds=40))
    second = await state_store.claim_webhook_delivery("exec-hook", now=now, lease_until=now + timedelta(seconds=40))
    assert first is not None
    failed = WebhookAttempt(at=now, status_code=500, error="the receiver answered HTTP 500", duration_ms=3.5)
    retry_at = now + timedelta(seconds=2)
    await state_store.save_webhook_delivery(
        first.model_copy(update={"attempts": [failed], "next_attempt_at": retry_at})
    )
    early = await state_store.claim_webhook_delivery("exec-hook", now=now, lease_until=now + timedelta(seconds=40))
    later = await state_store.claim_webhook_delivery("exec-hook", now=retry_at, lease_until=retry_at)

    assert due == ["exec-hook"]
    assert (first.url, first.attempts) == ("http://hooks.test/x", [])
    assert second is None
    assert early is None
    assert later is not None
    assert later.attempts == [failed]
    assert await state_store.get_webhook_delivery("exec-none") is None


async def test_a_settled_webhook_delivery_is_never_due_again(state_store: StateStore) -> None:
    now = datetime.now(UTC)
    for execution_id, settled in (("exec-done", "delivered_at"), ("exec-given-up", "gave_up_at")):
        delivery = WebhookDelivery(
            execution_id=execution_id, url="http://hooks.test", created_at=now, next_attempt_at=now
        )
        await state_store.add_webhook_delivery(delivery)
        await state_store.save_webhook_delivery(delivery.model_copy(update={settled: now}))

    assert await state_store.due_webhook_deliveries(now=now + timedelta(days=2)) == []
    assert await state_store.claim_webhook_delivery("exec-done", now=now, lease_until=now) is None
    stored = await state_store.get_webhook_delivery("exec-given-up")
    assert stored is not None
    assert stored.gave_up_at is not None
