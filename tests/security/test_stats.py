"""The overview's aggregates (`GET /stats/executions`, `GET /stats/cost`, issue 24) against
hostile callers: a tenant's figures count its own executions only, whatever it names; a
tenant naming another is refused (403) and sees none of its figures; its cost by tenant
holds itself only; an admin sees every tenant's, each under its name, or the one it names;
oversized windows, too many buckets and malformed or oversized parameters are a 422 before
any query; without a key, a 401."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.domain.execution import Execution, ExecutionStatus, Usage, utcnow
from agentrunner.node import Node
from tests.security.conftest import (
    ADMIN_KEY,
    TEAM_A_KEY,
    TEAM_B_KEY,
    orchestrator_client,
    tenants_settings,
)

A = {"X-API-Key": TEAM_A_KEY}
B = {"X-API-Key": TEAM_B_KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}
# team-b's figures, recognisable anywhere: 7 failures, each costing $0.777.
B_FAILURES = 7
B_COST = 0.777


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = tenants_settings(tmp_path)
    (tmp_path / "agents").mkdir()
    node = Node(settings)
    async with node.running():
        now = utcnow() - timedelta(seconds=1)
        runs = [("team-a", "writer", ExecutionStatus.SUCCEEDED, 0.01)] * 3
        runs += [("team-b", "secret-agent", ExecutionStatus.FAILED, B_COST)] * B_FAILURES
        for number, (tenant, agent, status, cost) in enumerate(runs):
            await node.store.executions.create_execution(
                Execution(
                    execution_id=f"exec-{number}",
                    agent=agent,
                    status=status,
                    tenant=tenant,
                    trace_id=f"trace-{number}",
                    usage=Usage(input_tokens=10, output_tokens=5),
                    cost_usd=cost,
                    created_at=now,
                    finished_at=now + timedelta(milliseconds=500),
                )
            )
        async with orchestrator_client(node) as client:
            yield client


def _counted(stats: dict[str, Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for bucket in stats["buckets"]:
        for status, number in bucket["counts"].items():
            total[status] = total.get(status, 0) + number
    return total


async def test_a_tenant_sees_its_own_figures_only(http: httpx.AsyncClient) -> None:
    executions = await http.get("/stats/executions", headers=A)
    own = await http.get("/stats/executions", params={"tenant": "team-a"}, headers=A)
    cost = await http.get("/stats/cost", params={"days": 2}, headers=A)

    assert executions.status_code == 200, executions.text
    assert _counted(executions.json()) == {"succeeded": 3}
    assert own.json() == executions.json()
    assert cost.status_code == 200, cost.text
    assert cost.json()["tenants"] == ["team-a"]
    assert [agent["agent"] for agent in cost.json()["days"][-1]["agents"]] == ["writer"]
    for body in (executions.text, cost.text):
        assert "secret-agent" not in body
        assert "team-b" not in body
        assert str(B_COST) not in body


async def test_a_tenant_naming_another_is_refused_and_sees_none_of_its_figures(http: httpx.AsyncClient) -> None:
    for path in ("/stats/executions", "/stats/cost"):
        for other in ("team-b", "ops", "nobody"):
            response = await http.get(path, params={"tenant": other}, headers=A)

            assert (response.status_code, response.json()["error"]["code"]) == (403, "admin_only"), response.text
            assert "secret-agent" not in response.text
            assert set(response.json()) == {"error"}  # no figure rides along


async def test_an_admin_sees_every_tenant_or_the_one_it_names(http: httpx.AsyncClient) -> None:
    everyone = (await http.get("/stats/executions", headers=ADMIN)).json()
    team_b = (await http.get("/stats/executions", params={"tenant": "team-b"}, headers=ADMIN)).json()
    cost_b = (await http.get("/stats/cost", params={"tenant": "team-b", "days": 1}, headers=ADMIN)).json()
    cost_all = (await http.get("/stats/cost", params={"days": 1}, headers=ADMIN)).json()

    assert _counted(everyone) == {"succeeded": 3, "failed": B_FAILURES}
    assert _counted(team_b) == {"failed": B_FAILURES}
    assert cost_b["tenant"] == "team-b"
    assert [(a["agent"], a["executions"]) for a in cost_b["days"][0]["agents"]] == [("secret-agent", B_FAILURES)]
    assert cost_b["days"][0]["cost_usd"] == pytest.approx(B_COST * B_FAILURES)
    assert cost_all["days"][0]["executions"] == 3 + B_FAILURES
    assert cost_all["tenants"] == ["team-a", "team-b", "ops"]


def _by_tenant(cost: dict[str, Any]) -> dict[str, tuple[int, int, int, float]]:
    """The figures per tenant of every day of a `GET /stats/cost` answer, summed."""
    sums: dict[str, tuple[int, int, int, float]] = {}
    for day in cost["days"]:
        for one in day["tenants"]:
            n, tokens_in, tokens_out, spent = sums.get(one["tenant"], (0, 0, 0, 0.0))
            sums[one["tenant"]] = (
                n + one["executions"],
                tokens_in + one["input_tokens"],
                tokens_out + one["output_tokens"],
                round(spent + (one["cost_usd"] or 0), 6),
            )
    return sums


async def test_the_cost_by_tenant_of_a_tenant_holds_itself_only(http: httpx.AsyncClient) -> None:
    # Two days: the executions were written a second ago, which may be yesterday.
    a = await http.get("/stats/cost", params={"days": 2}, headers=A)
    b = await http.get("/stats/cost", params={"days": 2}, headers=B)
    a_naming_b_agent = await http.get("/stats/cost", params={"days": 2, "agent": "secret-agent"}, headers=A)

    assert a.status_code == b.status_code == a_naming_b_agent.status_code == 200
    assert _by_tenant(a.json()) == {"team-a": (3, 30, 15, 0.03)}
    assert _by_tenant(b.json()) == {
        "team-b": (B_FAILURES, 10 * B_FAILURES, 5 * B_FAILURES, round(B_COST * B_FAILURES, 6))
    }
    assert all(day["tenants"] == day["agents"] == [] for day in a_naming_b_agent.json()["days"])
    for body in (a.text, a_naming_b_agent.text):
        assert "team-b" not in body
        assert "secret-agent" not in body
        assert str(B_COST) not in body
        assert str(round(B_COST * B_FAILURES, 3)) not in body
    assert "team-a" not in b.text


async def test_an_admin_sees_the_cost_of_every_tenant_by_tenant(http: httpx.AsyncClient) -> None:
    everyone = (await http.get("/stats/cost", params={"days": 2}, headers=ADMIN)).json()
    team_b = (await http.get("/stats/cost", params={"days": 2, "tenant": "team-b"}, headers=ADMIN)).json()

    assert _by_tenant(everyone) == {
        "team-a": (3, 30, 15, 0.03),
        "team-b": (B_FAILURES, 10 * B_FAILURES, 5 * B_FAILURES, round(B_COST * B_FAILURES, 6)),
    }
    assert list(_by_tenant(team_b)) == ["team-b"]


async def test_team_b_sees_its_own_and_not_team_a(http: httpx.AsyncClient) -> None:
    response = await http.get("/stats/executions", params={"window": 120}, headers=B)

    assert _counted(response.json()) == {"failed": B_FAILURES}
    assert all(bucket["p95_seconds"] in (None, 0.5) for bucket in response.json()["buckets"])


# Each a 422 before any query, for a tenant and an admin alike.
REFUSED: list[tuple[str, dict[str, Any]]] = [
    ("/stats/executions", {"window": 7 * 86400 + 1, "bucket": 86400}),  # over 7 days
    ("/stats/executions", {"window": 31 * 86400, "bucket": 86400}),
    ("/stats/executions", {"window": 10**30}),
    ("/stats/executions", {"window": 86400 + 60, "bucket": 60}),  # 1441 buckets
    ("/stats/executions", {"window": 31 * 86400, "bucket": 60}),
    ("/stats/executions", {"bucket": 59}),
    ("/stats/executions", {"bucket": 86401}),
    ("/stats/executions", {"window": -3600}),
    ("/stats/executions", {"window": "1h"}),
    ("/stats/executions", {"window": "3600.5"}),
    ("/stats/executions", {"agent": "x" * 129}),
    ("/stats/executions", {"tenant": "t" * 65}),
    ("/stats/executions", {"tenant": ""}),
    ("/stats/cost", {"days": 32}),
    ("/stats/cost", {"days": 0}),
    ("/stats/cost", {"days": "all"}),
    ("/stats/cost", {"days": -1}),
    ("/stats/cost", {"days": "1.5"}),
    ("/stats/cost", {"days": 10**30}),
    ("/stats/cost", {"agent": "x" * 129}),
    ("/stats/cost", {"tenant": "t" * 65}),
]


async def test_oversized_or_malformed_parameters_are_refused(http: httpx.AsyncClient) -> None:
    # One platform for every case (each would cost a node's start): the case is in the message.
    for path, params in REFUSED:
        for headers in (A, ADMIN):
            response = await http.get(path, params=params, headers=headers)

            refused = (response.status_code, response.json()["error"]["code"])
            assert refused == (422, "validation_error"), (path, params, response.text)


async def test_figures_need_a_key(http: httpx.AsyncClient) -> None:
    assert (await http.get("/stats/executions")).status_code == 401
    assert (await http.get("/stats/cost")).status_code == 401
    assert (await http.get("/stats/cost", headers={"X-API-Key": "x" * 40})).status_code == 401
