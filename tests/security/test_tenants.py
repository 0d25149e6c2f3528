"""Rules 1, 5 and 6 of issue 19, played by team-b against team-a: another tenant's
executions, sessions, plan runs, clarifications, schedules, dead letters and usage are
404s (answered exactly as missing ones), lists show a tenant its own, an admin sees
across tenants, two callers without `session_id` never share a conversation, and a
schedule's runs count against the tenant that made it.

Mostly in process, on the node's own apps: each request runs as the caller its
`X-API-Key` stands for (`as_caller`), as the API key check makes it (tenants team-a,
team-b and the admin ops of TENANTS_ENV), embedded and on PostgreSQL with Redis; the
last two play it with API auth on against a running `agentrunner up` and against
distributed roles (PostgreSQL, RabbitMQ).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from agentrunner.adapters.state.urls import run_schema_command
from agentrunner.domain.event import DeadLetter, Event
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.llm import LLMRequest
from agentrunner.domain.plan import Clarification, PlanRun, PlanRunStatus, StepRun, StepStatus
from agentrunner.domain.schedule import Schedule
from agentrunner.domain.tool_gates import PauseReason, PendingToolCall
from agentrunner.node import Node
from agentrunner.runtime.dead_letters import tenant_of
from agentrunner.runtime.scheduler import scheduled_run
from agentrunner.runtime.topics import TENANT_HEADER
from agentrunner.settings import Settings
from agentrunner.tracing import Caller, as_caller
from tests.e2e.platform import RunningPlatform, start_platform
from tests.integration.processes import role_processes
from tests.ports import free_port
from tests.security.conftest import ADMIN_KEY, TEAM_A_KEY, TEAM_B_KEY, TENANTS_ENV

REDIS_URL = "redis://127.0.0.1:6379/0"
CALLERS = {TEAM_A_KEY: Caller("team-a"), TEAM_B_KEY: Caller("team-b"), ADMIN_KEY: Caller("ops", admin=True)}
A = {"X-API-Key": TEAM_A_KEY}
B = {"X-API-Key": TEAM_B_KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}

CHAT = """
name: chat
agent_type: support
execution_mode: continuous
llm_config: {provider: scripted, model: s}
system_prompt: Be kind.
"""
WRITER = """
name: writer
agent_type: writer
execution_mode: autonomous
llm_config: {provider: scripted, model: s}
system_prompt: Write.
"""
NIGHTLY = """
name: nightly
agent_type: writer
execution_mode: scheduled
llm_config: {provider: scripted, model: s}
system_prompt: Report.
schedule_config: {type: interval, interval_seconds: 86400, task_data: {prompt: report}}
"""


def _reply(request: LLMRequest) -> str:
    # Everything the model was shown, so a leaked message would be in the answer.
    return " | ".join(str(m.content) for m in request.messages if m.role in ("user", "assistant"))


def _callers(app: ASGIApp) -> ASGIApp:
    """`app`, each request run as the caller of its X-API-Key (401 without a known one)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        key = dict(scope["headers"]).get(b"x-api-key", b"").decode()
        if key not in CALLERS:
            raise AssertionError("every request of these tests names its caller")
        with as_caller(CALLERS[key]):
            await app(scope, receive, send)

    return wrapped


Clients = dict[str, httpx.AsyncClient]


# Embedded (SQLite, in-memory cache), and on the services of a distributed deployment
# (PostgreSQL, with Redis as the cache in front of it).
BACKENDS = [
    pytest.param("embedded", id="embedded"),
    pytest.param("postgres+redis", id="postgres+redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
]


class Services(TypedDict, total=False):
    """The settings that put a node on the distributed backends (none when embedded)."""

    database_url: str
    redis_url: str
    redis_key_prefix: str


@pytest.fixture(params=BACKENDS)
def services(request: pytest.FixtureRequest) -> Services:
    """The settings of this run's backend (a sync fixture: only one can pull in the async
    `postgres_url` with `getfixturevalue`)."""
    if request.param == "embedded":
        return {}
    return {
        "database_url": request.getfixturevalue("postgres_url"),
        "redis_url": REDIS_URL,
        "redis_key_prefix": f"agentrunner-test:{uuid.uuid4().hex}:",
    }


@asynccontextmanager
async def _running_node(services: Services, tmp_path: Path, **more: Any) -> AsyncIterator[Node]:
    agents = tmp_path / "agents"
    agents.mkdir()
    for name, text in (("chat", CHAT), ("writer", WRITER), ("nightly", NIGHTLY)):
        (agents / f"{name}.yml").write_text(text)
    if "database_url" in services:  # what an operator does once before starting on PostgreSQL
        await asyncio.to_thread(run_schema_command, services["database_url"], "upgrade")
    settings = Settings(_env_file=None, agents_dir=agents, data_dir=tmp_path, **services, **more)
    node = Node(settings, script=_reply)
    async with node.running():
        yield node


@pytest.fixture
async def node(services: Services, tmp_path: Path) -> AsyncIterator[Node]:
    async with _running_node(services, tmp_path) as running:
        yield running


@asynccontextmanager
async def _clients(node: Node) -> AsyncIterator[Clients]:
    apps = node.apps()
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=_callers(apps["orchestrator"])), base_url="http://o") as o,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=_callers(apps["state"])), base_url="http://s") as s,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=_callers(apps["scheduler"])), base_url="http://c") as c,
    ):
        yield {"orchestrator": o, "state": s, "scheduler": c}


@pytest.fixture
async def http(node: Node) -> AsyncIterator[Clients]:
    async with _clients(node) as clients:
        yield clients


async def _invoke(http: Clients, headers: dict[str, str], agent: str, **body: Any) -> dict[str, Any]:
    response = await http["orchestrator"].post(f"/agents/{agent}/invoke", json={"wait": 10, **body}, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _assert_missing(response: httpx.Response, missing: httpx.Response) -> None:
    """Answered exactly as an id that does not exist (ids in the message aside)."""
    assert response.status_code == missing.status_code == 404, response.text
    assert response.json()["error"]["code"] == missing.json()["error"]["code"]


# -- executions ------------------------------------------------------------------------


async def test_another_tenants_execution_reads_as_missing(http: Clients) -> None:
    mine = await _invoke(http, A, "writer", task_data={"prompt": "team-a's secret"})
    orchestrator = http["orchestrator"]

    read = await orchestrator.get(f"/executions/{mine['execution_id']}", headers=B)
    missing = await orchestrator.get("/executions/0123456789abcdef", headers=B)
    audit = await http["state"].get(f"/executions/{mine['execution_id']}", headers=B)

    _assert_missing(read, missing)
    _assert_missing(audit, missing)
    assert "secret" not in read.text + audit.text
    assert (await orchestrator.get(f"/executions/{mine['execution_id']}", headers=A)).status_code == 200


async def test_executions_are_listed_to_their_tenant_and_all_to_an_admin(http: Clients) -> None:
    mine = await _invoke(http, A, "writer", task_data={"prompt": "a"})
    theirs = await _invoke(http, B, "writer", task_data={"prompt": "b"})

    def ids(response: httpx.Response) -> set[str]:
        return {item["execution_id"] for item in response.json()["items"]}

    orchestrator = http["orchestrator"]
    assert ids(await orchestrator.get("/executions", headers=B)) == {theirs["execution_id"]}
    assert ids(await orchestrator.get("/executions", headers=A)) == {mine["execution_id"]}
    assert ids(await orchestrator.get("/executions", headers=ADMIN)) >= {mine["execution_id"], theirs["execution_id"]}


async def test_another_tenants_execution_cannot_be_cancelled_or_watched(node: Node, http: Clients) -> None:
    mine = await _invoke(http, A, "writer", task_data={"prompt": "a"})
    orchestrator = http["orchestrator"]
    missing = await orchestrator.post("/executions/0123456789abcdef/cancel", headers=B)

    cancel = await orchestrator.post(f"/executions/{mine['execution_id']}/cancel", headers=B)
    watch = await orchestrator.get(f"/executions/{mine['execution_id']}/events", headers=B)

    _assert_missing(cancel, missing)  # not 409 "already ended": that would say it exists
    _assert_missing(watch, missing)
    assert (await node.store.executions.get_execution(mine["execution_id"])).status is ExecutionStatus.SUCCEEDED


# -- sessions (rule 5) -------------------------------------------------------------------


async def test_two_callers_without_a_session_never_see_each_others_messages(http: Clients) -> None:
    first = await _invoke(http, A, "chat", task_data={"prompt": "my card number is 4242"})
    second = await _invoke(http, A, "chat", task_data={"prompt": "what did I say?"})
    other = await _invoke(http, B, "chat", task_data={"prompt": "hello"})

    assert None not in (first["session_id"], second["session_id"], other["session_id"])
    assert len({first["session_id"], second["session_id"], other["session_id"]}) == 3
    assert "4242" not in second["output"] + other["output"]
    continued = await _invoke(http, A, "chat", task_data={"prompt": "again"}, session_id=first["session_id"])
    assert "4242" in continued["output"], "the returned session id continues the conversation"


async def test_the_same_session_id_of_two_tenants_is_two_conversations(http: Clients) -> None:
    await _invoke(http, A, "chat", task_data={"prompt": "team-a's plan"}, session_id="s1")
    theirs = await _invoke(http, B, "chat", task_data={"prompt": "hi"}, session_id="s1")

    assert "team-a" not in theirs["output"]
    state = http["state"]
    assert (await state.get("/state/chat/s1", headers=B)).json()["history"][0]["content"] == "hi"
    assert (await state.get("/state/chat/s1", headers=A)).json()["history"][0]["content"] == "team-a's plan"


async def test_another_tenants_session_state_cannot_be_read_written_or_deleted(http: Clients) -> None:
    state = http["state"]
    written = await state.put("/state/chat/s1", json={"memory": {"secret": "a"}, "version": 0}, headers=A)
    assert written.status_code == 200, written.text

    read = await state.get("/state/chat/s1", headers=B)
    by_name = await state.get("/state/chat/s1", params={"tenant": "team-a"}, headers=B)
    overwrite = await state.put("/state/chat/s1", json={"memory": {"secret": "b"}}, headers=B)
    deleted = await state.delete("/state/chat/s1", headers=B)  # its own, just written
    gone = await state.delete("/state/chat/s1", headers=B)

    assert read.status_code == by_name.status_code == gone.status_code == 404
    assert (overwrite.status_code, deleted.status_code) == (200, 204)
    assert (await state.get("/state/chat/s1", headers=A)).json()["memory"] == {"secret": "a"}
    admin = await state.get("/state/chat/s1", params={"tenant": "team-a"}, headers=ADMIN)
    assert admin.json()["memory"] == {"secret": "a"}


# -- plan runs and clarifications ----------------------------------------------------------


async def _held_run(node: Node, tenant: str) -> PlanRun:
    run = PlanRun(
        id=f"run-{tenant}",
        agent="team",
        trace_id="t",
        tenant=tenant,
        status=PlanRunStatus.AWAITING_APPROVAL,
        clarifications=[Clarification(id="q1", run_id=f"run-{tenant}", step_id="s", question="budget?")],
    )
    return await node.store.plan_runs.create_plan_run(run)


async def test_another_tenants_plan_run_cannot_be_read_approved_rejected_or_answered(node: Node, http: Clients) -> None:
    run = await _held_run(node, "team-a")
    orchestrator = http["orchestrator"]
    missing = await orchestrator.get("/plan-runs/nope", headers=B)

    answers = [
        await orchestrator.get(f"/plan-runs/{run.id}", headers=B),
        await orchestrator.post(f"/plan-runs/{run.id}/approve", headers=B),
        await orchestrator.post(f"/plan-runs/{run.id}/reject", headers=B),
        await orchestrator.post(f"/plan-runs/{run.id}/clarifications/q1", json={"response": "1M"}, headers=B),
    ]

    for answer in answers:
        _assert_missing(answer, missing)
    stored = await node.store.plan_runs.get_plan_run(run.id)
    assert (stored.status, stored.clarifications[0].answer) == (PlanRunStatus.AWAITING_APPROVAL, None)
    listed = await orchestrator.get("/plan-runs", headers=B)
    assert listed.json()["items"] == []
    assert [item["id"] for item in (await orchestrator.get("/plan-runs", headers=ADMIN)).json()["items"]] == [run.id]


async def test_the_tool_call_a_plan_step_waits_on_is_shown_to_its_tenant_only_and_cut(
    node: Node, http: Clients
) -> None:
    step_execution = Execution(
        execution_id="step-exec-a",
        agent="gated",
        status=ExecutionStatus.WAITING_APPROVAL,
        tenant="team-a",
        trace_id="t",
        pending_tool_call=PendingToolCall(
            reason=PauseReason.APPROVAL,
            tool="send_secret_mail",
            arguments={"to": "ceo@example.com", "body": "confidential " * 10_000},  # 130 kB
            call_id="c1",
            generation=1,
            seq=2,
            asked_at=datetime.now(UTC),
        ),
    )
    await node.store.executions.create_execution(step_execution)
    step = StepRun(step_id="mail", agent="gated", status=StepStatus.WAITING_APPROVAL, execution_id="step-exec-a")
    run = PlanRun(
        id="run-waiting",
        agent="team",
        trace_id="t",
        tenant="team-a",
        status=PlanRunStatus.WAITING_APPROVAL,
        steps=[step],
    )
    await node.store.plan_runs.create_plan_run(run)
    orchestrator = http["orchestrator"]

    stolen = await orchestrator.get(f"/plan-runs/{run.id}", headers=B)
    own = await orchestrator.get(f"/plan-runs/{run.id}", headers=A)

    _assert_missing(stolen, await orchestrator.get("/plan-runs/nope", headers=B))
    assert "send_secret_mail" not in stolen.text
    assert "confidential" not in stolen.text
    [waiting] = own.json()["waiting_steps"]
    assert (waiting["step_id"], waiting["execution_id"]) == ("mail", "step-exec-a")
    assert waiting["pending_tool_call"]["tool"] == "send_secret_mail"
    assert len(own.content) < 8_000  # the arguments cut to a preview: the whole call is on the execution
    assert waiting["pending_tool_call"]["arguments"]["to"] == "ceo@example.com"


# -- schedules (and rule 6) -----------------------------------------------------------------


async def test_another_tenants_schedule_cannot_be_seen_triggered_paused_or_deleted(node: Node, http: Clients) -> None:
    scheduler = http["scheduler"]
    created = await scheduler.post(
        "/schedules", json={"id": "a-daily", "agent": "writer", "interval_seconds": 86400}, headers=A
    )
    assert created.status_code == 201, created.text
    missing = await scheduler.post("/schedules/nope/trigger", headers=B)

    attempts = [
        await scheduler.get("/schedules/a-daily", headers=B),
        await scheduler.get("/schedules/a-daily/fires", headers=B),
        await scheduler.post("/schedules/a-daily/trigger", headers=B),
        await scheduler.post("/schedules/a-daily/pause", headers=B),
        await scheduler.post("/schedules/a-daily/resume", headers=B),
        await scheduler.delete("/schedules/a-daily", headers=B),
    ]

    for attempt in attempts:
        _assert_missing(attempt, missing)
    assert [view["schedule"]["id"] for view in (await scheduler.get("/schedules", headers=B)).json()] == []
    stored = await node.store.schedules.get_schedule("a-daily")
    assert (stored.tenant, stored.paused, stored.last_fire_at) == ("team-a", False, None)


async def test_agent_file_schedules_are_the_admins(http: Clients) -> None:
    scheduler = http["scheduler"]

    tenant_view = [view["schedule"]["id"] for view in (await scheduler.get("/schedules", headers=A)).json()]
    admin_view = [view["schedule"]["id"] for view in (await scheduler.get("/schedules", headers=ADMIN)).json()]
    paused = await scheduler.post(f"/schedules/{admin_view[0]}/pause", headers=A)

    assert tenant_view == []
    assert len(admin_view) == 1
    assert admin_view[0].endswith("nightly")
    assert paused.status_code == 404
    assert (await scheduler.post(f"/schedules/{admin_view[0]}/pause", headers=ADMIN)).status_code == 200


async def test_a_schedules_runs_count_against_the_tenant_that_made_it(node: Node, http: Clients) -> None:
    scheduler = http["scheduler"]
    await scheduler.post("/schedules", json={"id": "a-daily", "agent": "writer", "interval_seconds": 86400}, headers=A)

    fire = await scheduler.post("/schedules/a-daily/trigger", headers=A)

    assert fire.status_code == 202, fire.text
    execution_id = fire.json()["execution_id"]
    execution = await node.orchestrator.wait_for(execution_id, 10)
    assert (execution.tenant, execution.status) == ("team-a", ExecutionStatus.SUCCEEDED)
    usage = (await http["state"].get("/usage", headers=A)).json()
    assert usage["executions"] == 1, "the scheduled run is team-a's usage"
    assert (await http["orchestrator"].get(f"/executions/{execution_id}", headers=A)).status_code == 200
    assert (await http["orchestrator"].get(f"/executions/{execution_id}", headers=B)).status_code == 404


# -- dead letters ---------------------------------------------------------------------------


async def _dead_letter(node: Node, tenant: str) -> str:
    event = Event(topic="orders.created", payload={"order": tenant}, trace_id="t", headers={TENANT_HEADER: tenant})
    stored = await node.store.dead_letters.record_dead_letter(
        DeadLetter(queue="agent.writer", event=event, error="boom"), tenant=tenant_of(event)
    )
    return stored.id


async def test_another_tenants_dead_letter_cannot_be_listed_replayed_or_deleted(node: Node, http: Clients) -> None:
    letter = await _dead_letter(node, "team-a")
    orchestrator = http["orchestrator"]
    missing = await orchestrator.post("/dead-letters/nope/replay", headers=B)

    replay = await orchestrator.post(f"/dead-letters/{letter}/replay", headers=B)
    delete = await orchestrator.delete(f"/dead-letters/{letter}", headers=B)
    listed = await orchestrator.get("/dead-letters", headers=B)

    _assert_missing(replay, missing)
    _assert_missing(delete, missing)
    assert listed.json() == []
    assert (await node.store.dead_letters.get_dead_letter(letter)).replayed_at is None
    assert [item["id"] for item in (await orchestrator.get("/dead-letters", headers=A)).json()] == [letter]


async def test_an_admin_sees_and_replays_every_dead_letter(node: Node, http: Clients) -> None:
    letters = {await _dead_letter(node, "team-a"), await _dead_letter(node, "team-b")}
    orchestrator = http["orchestrator"]

    listed = {item["id"] for item in (await orchestrator.get("/dead-letters", headers=ADMIN)).json()}
    replayed = [await orchestrator.post(f"/dead-letters/{letter}/replay", headers=ADMIN) for letter in letters]

    assert listed == letters
    assert [response.status_code for response in replayed] == [200, 200]


# -- usage ----------------------------------------------------------------------------------


async def test_usage_counts_the_callers_own_executions_and_an_admins_all(http: Clients) -> None:
    await _invoke(http, A, "writer", task_data={"prompt": "a"})
    await _invoke(http, A, "writer", task_data={"prompt": "a again"})
    await _invoke(http, B, "writer", task_data={"prompt": "b"})
    state = http["state"]

    def executions(response: httpx.Response) -> int:
        count: int = response.json()["executions"]
        return count

    assert executions(await state.get("/usage", headers=B)) == 1
    assert executions(await state.get("/usage", headers=A)) == 2
    assert executions(await state.get("/usage", headers=ADMIN)) == 3
    # A window that cuts hours and spans a day: read from the usage buckets and the live rows.
    now = datetime.now(UTC)
    window = {
        "since": (now - timedelta(hours=25, minutes=7)).isoformat(),
        "until": (now + timedelta(minutes=61)).isoformat(),
    }
    assert executions(await state.get("/usage", params=window, headers=B)) == 1
    assert executions(await state.get("/usage", params=window, headers=A)) == 2
    assert executions(await state.get("/usage", params=window, headers=ADMIN)) == 3


async def test_usage_stays_each_tenants_own_after_the_retention_purge(services: Services, tmp_path: Path) -> None:
    # Windows of about a tenth of a millisecond: every execution that ended is past them.
    tiny = {"retention_days": 1e-9, "idempotency_ttl_seconds": 1e-4}
    async with _running_node(services, tmp_path, **tiny) as node, _clients(node) as http:
        await _invoke(http, A, "writer", task_data={"prompt": "a"})
        await _invoke(http, A, "writer", task_data={"prompt": "a again"})
        await _invoke(http, B, "writer", task_data={"prompt": "b"})
        state = http["state"]
        before = [(await state.get("/usage", headers=caller)).json() for caller in (A, B, ADMIN)]

        # The node's own purge loop may hold the lease or take some of them first (its pass
        # at start can run late on a loaded machine): purge until every execution is gone.
        listed = (await http["orchestrator"].get("/executions", headers=ADMIN)).json()["items"]
        assert len(listed) == 3
        deadline = asyncio.get_running_loop().time() + 30
        while listed:
            assert asyncio.get_running_loop().time() < deadline, listed
            await node.retention.purge_once()
            listed = (await http["orchestrator"].get("/executions", headers=ADMIN)).json()["items"]
        after = [(await state.get("/usage", headers=caller)).json() for caller in (A, B, ADMIN)]
        assert after == before
        assert [usage["executions"] for usage in after] == [2, 1, 3]


# -- idempotency ----------------------------------------------------------------------------


async def test_an_idempotency_key_of_one_tenant_never_replays_anothers_answer(http: Clients) -> None:
    body = {"task_data": {"prompt": "same"}, "wait": 10}
    orchestrator = http["orchestrator"]
    key = {"Idempotency-Key": "order-42"}

    mine = await orchestrator.post("/agents/writer/invoke", json=body, headers=A | key)
    theirs = await orchestrator.post("/agents/writer/invoke", json=body, headers=B | key)

    assert mine.status_code == theirs.status_code == 200
    assert mine.json()["execution_id"] != theirs.json()["execution_id"]
    assert "idempotent-replayed" not in theirs.headers


def test_a_dead_letter_belongs_to_the_tenant_of_its_event() -> None:
    tagged = Event(topic="orders.created", trace_id="t", headers={TENANT_HEADER: "team-a"})
    invocation = Event(topic="invoke.writer", payload={"execution_id": "e", "tenant": "team-b"}, trace_id="t")
    forged = Event(topic="orders.created", payload={"tenant": "team-b"}, trace_id="t")

    assert [tenant_of(event) for event in (tagged, invocation, forged)] == ["team-a", "team-b", None]


# -- against a running `agentrunner up` ------------------------------------------------------

_ENV = TENANTS_ENV
ECHO_AGENTS = {
    "echo.yml": "name: echo\nagent_type: demo\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n",
    "talk.yml": "name: talk\nagent_type: demo\nexecution_mode: continuous\nllm_config: {provider: echo, model: echo}\n",
}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    workdir = tmp_path_factory.mktemp("tenants")
    (workdir / "agents").mkdir()
    for name, text in ECHO_AGENTS.items():
        (workdir / "agents" / name).write_text(text)
    running = start_platform(workdir, _ENV)
    try:
        yield running
    finally:
        running.stop()


def test_on_a_running_platform_another_tenants_execution_and_session_are_missing(platform: RunningPlatform) -> None:
    orchestrator, state = platform.url("orchestrator"), platform.url("state")
    with httpx.Client(timeout=30) as client:
        mine = client.post(f"{orchestrator}/agents/echo/invoke", json={"task_data": {"prompt": "a's"}}, headers=A)
        turn = client.post(f"{orchestrator}/agents/talk/invoke", json={"task_data": {"prompt": "hi"}}, headers=A)
        execution_id, session_id = mine.json()["execution_id"], turn.json()["session_id"]

        read = client.get(f"{orchestrator}/executions/{execution_id}", headers=B)
        listed = client.get(f"{orchestrator}/executions", headers=B).json()["items"]
        session = client.get(f"{state}/state/talk/{session_id}", headers=B)
        own_session = client.get(f"{state}/state/talk/{session_id}", headers=A)

    assert (mine.status_code, turn.status_code) == (200, 200)
    assert read.status_code == 404
    assert listed == []
    assert session.status_code == 404
    assert own_session.json()["history"][0]["content"] == "hi"


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_distributed_another_tenants_execution_and_session_are_missing(tmp_path: Path, postgres_url: str) -> None:
    run_schema_command(postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    for name, text in ECHO_AGENTS.items():
        (tmp_path / "agents" / name).write_text(text)
    orchestrator_port, state_port = free_port(), free_port()
    env = {**_ENV, "ORCHESTRATOR_PORT": str(orchestrator_port), "STATE_PORT": str(state_port)}
    with role_processes(tmp_path, postgres_url, **env) as roles:
        orchestrator, state = f"http://127.0.0.1:{orchestrator_port}", f"http://127.0.0.1:{state_port}"
        roles.serve("orchestrator", log="o.log")
        roles.serve("state", log="s.log")
        continuous = free_port()
        roles.serve("continuous", "--health-port", str(continuous), log="c.log")
        roles.serve_workers(1, ready=(orchestrator, state, f"http://127.0.0.1:{continuous}"))
        with httpx.Client(timeout=30) as client:
            mine = client.post(f"{orchestrator}/agents/echo/invoke", json={"task_data": {"prompt": "a"}}, headers=A)
            turn = client.post(f"{orchestrator}/agents/talk/invoke", json={"task_data": {"prompt": "hi"}}, headers=A)
            other = client.post(f"{orchestrator}/agents/talk/invoke", json={"task_data": {"prompt": "yo"}}, headers=B)
            read = client.get(f"{orchestrator}/executions/{mine.json()['execution_id']}", headers=B)
            session = client.get(f"{state}/state/talk/{turn.json()['session_id']}", headers=B)

    assert (mine.status_code, turn.status_code, other.status_code) == (200, 200, 200), roles.log_text()
    assert turn.json()["session_id"] != other.json()["session_id"]
    assert (read.status_code, session.status_code) == (404, 404)


def test_a_scheduled_run_carries_its_creators_tenant_to_the_worker() -> None:
    schedule = Schedule(id="a-daily", agent="writer", interval_seconds=60, tenant="team-a")
    now = datetime.now(UTC)

    execution, events = scheduled_run(schedule, now, now)

    assert execution.tenant == "team-a"
    invocation, announcement = events
    # The worker's budgets and concurrency limits read the invocation's tenant.
    assert invocation.payload["tenant"] == "team-a"
    assert invocation.headers[TENANT_HEADER] == announcement.headers[TENANT_HEADER] == "team-a"
