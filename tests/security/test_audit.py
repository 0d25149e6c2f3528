"""The audit log (`GET /audit`): every change a caller makes is recorded with who made it,
and only an admin reads the log, a page at a time.

team-a and team-b play tenants that must not read it (it names every tenant's actions and
subjects), the admin ops reads it; in process on the node's own apps, each request run as
the caller its `X-API-Key` stands for, embedded and on PostgreSQL with Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import httpx
import pytest

from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.plan import PlanRun, PlanRunStatus
from agentrunner.node import Node
from tests.security.test_tenants import ADMIN, REDIS_URL, A, B, Services, _callers, _dead_letter, _running_node

Clients = dict[str, httpx.AsyncClient]

BACKENDS = [
    pytest.param("embedded", id="embedded"),
    pytest.param("postgres+redis", id="postgres+redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
]


@pytest.fixture(params=BACKENDS)
def services(request: pytest.FixtureRequest) -> Services:
    if request.param == "embedded":
        return {}
    return {
        "database_url": request.getfixturevalue("postgres_url"),
        "redis_url": REDIS_URL,
        "redis_key_prefix": f"agentrunner-test:{uuid.uuid4().hex}:",
    }


@pytest.fixture
async def node(services: Services, tmp_path: Path) -> AsyncIterator[Node]:
    async with _running_node(services, tmp_path) as running:
        yield running


@asynccontextmanager
async def _clients(node: Node) -> AsyncIterator[Clients]:
    apps = node.apps()

    def client(role: Literal["orchestrator", "state", "config"]) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=_callers(apps[role])), base_url=f"http://{role}")

    async with client("orchestrator") as o, client("state") as s, client("config") as c:
        yield {"orchestrator": o, "state": s, "config": c}


@pytest.fixture
async def http(node: Node) -> AsyncIterator[Clients]:
    async with _clients(node) as clients:
        yield clients


async def _held_run(node: Node, run_id: str, tenant: str) -> None:
    # "writer" is a registered agent: approving reads its configuration. A run is its
    # execution's (same id), which a rejection ends.
    await node.store.executions.create_execution(
        Execution(execution_id=run_id, agent="writer", status=ExecutionStatus.RUNNING, trace_id="t", tenant=tenant)
    )
    await node.store.plan_runs.create_plan_run(
        PlanRun(id=run_id, agent="writer", trace_id="t", tenant=tenant, status=PlanRunStatus.AWAITING_APPROVAL)
    )


async def test_a_tenant_cannot_read_the_audit_log(http: Clients) -> None:
    state = http["state"]
    await state.put("/state/chat/s1", json={"memory": {"k": "v"}}, headers=A)  # something to hide

    answers = [
        await state.get("/audit", headers=A),
        await state.get("/audit", headers=B),
        await state.get("/audit", params={"limit": 500, "before": 2**40}, headers=B),
    ]

    for answer in answers:
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "admin_only"
        assert "chat" not in answer.text
    assert (await state.get("/audit", headers=ADMIN)).status_code == 200


async def test_every_change_is_recorded_with_the_caller_who_made_it(node: Node, http: Clients) -> None:
    state, orchestrator = http["state"], http["orchestrator"]
    await _held_run(node, "run-approved", "team-a")
    await _held_run(node, "run-rejected", "team-a")
    replayed, discarded = await _dead_letter(node, "team-b"), await _dead_letter(node, "team-b")

    done = [
        await state.put("/state/chat/s1", json={"memory": {"pin": "pin-never-logged"}}, headers=A),
        await state.delete("/state/chat/s1", headers=A),
        await orchestrator.post("/plan-runs/run-rejected/reject", headers=B),  # not team-b's: 404, no entry
        await orchestrator.post("/plan-runs/run-approved/approve", headers=ADMIN),
        await orchestrator.post("/plan-runs/run-rejected/reject", json={"reason": "too dear"}, headers=ADMIN),
        await orchestrator.post(f"/dead-letters/{replayed}/replay", headers=B),
        await orchestrator.delete(f"/dead-letters/{discarded}", headers=ADMIN),
        await http["config"].post("/configs/reload", headers=ADMIN),
    ]
    page = await state.get("/audit", headers=ADMIN)

    assert [answer.status_code for answer in done] == [200, 204, 404, 200, 200, 200, 204, 200]
    assert page.status_code == 200, page.text
    seen = [(entry["action"], entry["actor"], entry["subject"]) for entry in page.json()["items"]]
    assert seen == [
        ("config.reload", "admin:ops", "agents"),
        ("dead_letter.discard", "admin:ops", discarded),
        ("dead_letter.replay", "tenant:team-b", replayed),
        ("plan_run.reject", "admin:ops", "run-rejected"),
        ("plan_run.approve", "admin:ops", "run-approved"),
        ("state.delete", "tenant:team-a", "chat/s1"),
        ("state.write", "tenant:team-a", "chat/s1"),
    ]
    assert "pin-never-logged" not in page.text, "an entry records that a session was written, not what"
    assert page.json()["items"][-1]["details"]["owner"] == "team-a"


async def test_the_audit_log_is_read_a_bounded_page_at_a_time(http: Clients) -> None:
    state = http["state"]
    for session in ("s1", "s2", "s3", "s4", "s5"):
        await state.put(f"/state/chat/{session}", json={"memory": {}}, headers=A)

    first = (await state.get("/audit", params={"limit": 2}, headers=ADMIN)).json()
    second = (await state.get("/audit", params={"limit": 2, "before": first["next_before"]}, headers=ADMIN)).json()
    last = (await state.get("/audit", params={"limit": 2, "before": second["next_before"]}, headers=ADMIN)).json()
    too_many = await state.get("/audit", params={"limit": 501}, headers=ADMIN)
    none = await state.get("/audit", params={"limit": 0}, headers=ADMIN)

    subjects = [entry["subject"] for page in (first, second, last) for entry in page["items"]]
    assert subjects == ["chat/s5", "chat/s4", "chat/s3", "chat/s2", "chat/s1"]
    assert last["next_before"] is None
    assert (too_many.status_code, none.status_code) == (422, 422)
