"""The state role's HTTP API (8001) over the real state store, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.api.edge import EdgeConfig
from agentrunner.api.state import state_app
from agentrunner.domain.execution import Execution, ExecutionStatus, Usage

LIMIT = 4 * 1024 * 1024


@pytest.fixture
async def http(store: SQLStateStore) -> AsyncIterator[httpx.AsyncClient]:
    app = state_app(
        EdgeConfig(readiness={"database": store.ping}, max_body_bytes=LIMIT),
        sessions=store,
        executions=store,
        queries=store,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://state") as client:
        yield client


async def test_state_is_created_read_and_versioned(http: httpx.AsyncClient) -> None:
    created = await http.put("/state/chat/s-1", json={"history": [{"role": "user", "content": "hi"}], "version": 0})
    read = await http.get("/state/chat/s-1")
    updated = await http.put("/state/chat/s-1", json={"memory": {"name": "Ada"}, "version": 1})

    assert created.status_code == 200
    assert created.json()["version"] == 1
    assert read.json()["history"] == [{"role": "user", "content": "hi"}]
    assert updated.json()["version"] == 2
    assert (await http.get("/state/chat/s-1")).json()["memory"] == {"name": "Ada"}


async def test_a_stale_version_is_409_and_changes_nothing(http: httpx.AsyncClient) -> None:
    await http.put("/state/chat/s-1", json={"memory": {"v": 1}, "version": 0})
    await http.put("/state/chat/s-1", json={"memory": {"v": 2}, "version": 1})

    stale = await http.put("/state/chat/s-1", json={"memory": {"v": "lost update"}, "version": 1})

    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "conflict"
    assert "stored version is 2" in stale.json()["error"]["message"]
    assert (await http.get("/state/chat/s-1")).json()["memory"] == {"v": 2}


async def test_a_write_without_version_overwrites(http: httpx.AsyncClient) -> None:
    await http.put("/state/chat/s-1", json={"memory": {"v": 1}})
    second = await http.put("/state/chat/s-1", json={"memory": {"v": 2}})

    assert second.json()["version"] == 2
    assert second.json()["memory"] == {"v": 2}


async def test_unknown_state_is_404_and_delete_forgets(http: httpx.AsyncClient) -> None:
    missing = await http.get("/state/chat/nobody")
    await http.put("/state/chat/s-1", json={"memory": {"v": 1}})
    deleted = await http.delete("/state/chat/s-1")

    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "state_not_found"
    assert deleted.status_code == 204
    assert (await http.get("/state/chat/s-1")).status_code == 404
    assert (await http.delete("/state/chat/s-1")).status_code == 404


async def test_a_3_mb_state_round_trips(http: httpx.AsyncClient) -> None:
    # In memory: a history is bounded by MAX_HISTORY_BYTES (1 MiB), tests/security/test_input_bounds.py.
    notes = [{"role": "user", "content": f"message {i} " + "x" * 300} for i in range(10_000)]

    saved = await http.put("/state/chat/big", json={"memory": {"notes": notes}})
    read = await http.get("/state/chat/big")

    assert saved.status_code == 200
    assert read.json()["memory"] == {"notes": notes}


async def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(http: httpx.AsyncClient) -> None:
    body = b'{"memory": {"blob": "' + b"x" * LIMIT + b'"}}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    declared = await http.put("/state/chat/s-1", content=body, headers={"content-type": "application/json"})
    streamed = await http.put("/state/chat/s-1", content=chunks(), headers={"content-type": "application/json"})

    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert "MAX_REQUEST_BYTES" in response.json()["error"]["message"]
    assert (await http.get("/state/chat/s-1")).status_code == 404


async def test_usage_totals_per_agent_and_time_range(store: SQLStateStore, http: httpx.AsyncClient) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for index, (agent, cost) in enumerate([("a", 0.5), ("a", 0.25), ("b", None), ("a", 1.0)]):
        await store.create_execution(
            Execution(
                execution_id=f"e{index}",
                agent=agent,
                status=ExecutionStatus.SUCCEEDED,
                usage=Usage(input_tokens=10, output_tokens=5),
                cost_usd=cost,
                trace_id="t",
                created_at=start + timedelta(hours=index),
            )
        )

    everything = (await http.get("/usage")).json()
    early_a = (
        await http.get("/usage", params={"agent": "a", "since": "2026-01-01T00:00:00", "until": "2026-01-01T02:00:00Z"})
    ).json()

    assert everything["executions"] == 4
    assert everything["input_tokens"] == 40
    assert everything["cost_usd"] == pytest.approx(1.75)
    assert {a["agent"]: a["cost_usd"] for a in everything["agents"]} == {"a": pytest.approx(1.75), "b": None}
    assert (early_a["executions"], early_a["output_tokens"]) == (2, 10)
    assert early_a["cost_usd"] == pytest.approx(0.75)


async def test_the_audit_record_of_an_execution(store: SQLStateStore, http: httpx.AsyncClient) -> None:
    await store.create_execution(Execution(execution_id="e1", agent="a", trace_id="t-1"))

    found = await http.get("/executions/e1")
    missing = await http.get("/executions/nope")

    assert found.json()["trace_id"] == "t-1"
    assert missing.status_code == 404
