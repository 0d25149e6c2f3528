"""A distributed node (PostgreSQL, Redis, RabbitMQ) through a RabbitMQ outage: while the
broker is down an invocation is still accepted (recorded with its outbox event), a direct
publish (`POST /events`) answers 503 dependency_unavailable with Retry-After within the
bus's reconnect wait (not its publish timeout), readiness says the event bus is down; once
the broker is back the node reconnects by itself and every accepted invocation runs once.
A node, and a worker process, whose broker is gone for good still stop within a bound.

The RabbitMQ here is the module's own (scripts/private_services.sh, on free ports), started
again for the next test when one stopped it for good, with an exchange prefix per test: the
shared broker on 5672 is never stopped. PostgreSQL and Redis are the shared servers, with a
database and a key prefix of the test's own."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from agentrunner.adapters.bus.rabbitmq import RECONNECT_WAIT_SECONDS
from agentrunner.adapters.state.urls import run_schema_command
from agentrunner.node import Node
from agentrunner.settings import Settings
from tests.conftest import FIXTURE_AGENTS
from tests.contract.conftest import REDIS_URL
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import unretrieved
from tests.integration.private_rabbitmq import PrivateRabbitMQ
from tests.integration.processes import echo_worker_env, spawn_worker

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.rabbitmq,
    pytest.mark.skipif(not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists(), reason="needs rabbitmq-server"),
]

# The bus's publish timeout (a connected broker that does not confirm): an outage must be
# answered well before it.
PUBLISH_TIMEOUT_SECONDS = 10.0
# How long a node, or a worker process after SIGTERM, may take to stop with its broker gone
# (nothing in flight: the drain has nothing to wait for).
STOP_BOUND_SECONDS = 15.0


@pytest.fixture(scope="module")
def module_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """One private broker for the module, started by `rabbitmq` (its start, ~4 s, is the
    slow part), killed and its data deleted afterwards."""
    broker = PrivateRabbitMQ(Path(tempfile.mkdtemp(prefix="agentrunner-rabbitmq-")))
    try:
        yield broker
    finally:
        asyncio.run(broker.down())
        shutil.rmtree(broker.directory, ignore_errors=True)


@pytest.fixture
async def rabbitmq(module_rabbitmq: PrivateRabbitMQ) -> PrivateRabbitMQ:
    """The module's broker, taking connections: started again when the test before stopped
    it for good. Each test's node has an exchange prefix of its own on it (`_settings`)."""
    if not await module_rabbitmq.answers():
        await module_rabbitmq.start()
    return module_rabbitmq


@pytest.fixture
async def database(postgres_url: str) -> str:
    """A PostgreSQL database of the test's own, migrated (a distributed node does not
    migrate a shared database itself)."""
    await asyncio.to_thread(run_schema_command, postgres_url, "upgrade")
    return postgres_url


def _settings(tmp_path: Path, database_url: str, rabbitmq_url: str, **more: Any) -> Settings:
    (tmp_path / "agents").mkdir(exist_ok=True)
    shutil.copy(FIXTURE_AGENTS / "echo-helper.yml", tmp_path / "agents" / "echo-helper.yml")
    return Settings(
        _env_file=None,
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_key_prefix=f"test-{uuid4().hex[:12]}:",
        rabbitmq_url=rabbitmq_url,
        rabbitmq_exchange_prefix=f"test-{uuid4().hex[:12]}",
        agents_dir=tmp_path / "agents",
        data_dir=tmp_path,
        **more,
    )


def _is_outage(answer: httpx.Response) -> bool:
    body = answer.json()
    code = body["error"]["code"] if "error" in body else body.get("status")  # readiness: not_ready
    return (
        answer.status_code == 503
        and code in {"dependency_unavailable", "not_ready"}
        and int(answer.headers["retry-after"]) >= 1
    )


async def _until(condition: Any, what: str, timeout: float = 60.0) -> float:
    """Wait until `await condition()` is true; the seconds it took."""
    began = time.monotonic()
    while not await condition():
        assert time.monotonic() - began < timeout, f"{what}: not within {timeout:g} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - began


async def test_through_a_broker_outage_invocations_are_kept_publishes_fail_fast_and_all_recovers(
    tmp_path: Path, database: str, rabbitmq: PrivateRabbitMQ, loop_errors: list[dict[str, Any]]
) -> None:
    node = Node(_settings(tmp_path, database, rabbitmq.url))
    async with node.running():
        transport = httpx.ASGITransport(app=node.apps()["orchestrator"])
        async with httpx.AsyncClient(transport=transport, base_url="http://node", timeout=60) as client:

            async def ready() -> bool:
                return (await client.get("/health/ready")).status_code == 200

            async def not_ready() -> bool:
                return not await ready()

            before = await client.post(
                "/agents/echo-helper/invoke", json={"task_data": {"prompt": "before"}, "wait": 10}
            )
            assert (before.status_code, before.json()["status"]) == (200, "succeeded"), before.text

            await rabbitmq.stop()
            await _until(not_ready, "readiness after the broker stopped")

            accepted: list[str] = []
            for index in range(3):
                answer = await client.post(
                    "/agents/echo-helper/invoke", json={"task_data": {"prompt": f"down-{index}"}, "wait": 0}
                )
                assert answer.status_code == 202, answer.text
                accepted.append(answer.json()["execution_id"])
            held = [(await client.get(f"/executions/{execution_id}")).json()["status"] for execution_id in accepted]

            began = time.monotonic()
            published = await client.post("/events", json={"topic": "outage.test", "payload": {"n": 1}})
            publish_took = time.monotonic() - began
            readiness = await client.get("/health/ready")

            assert held == ["queued"] * 3  # recorded, waiting for the broker
            assert _is_outage(published), (published.status_code, published.text)
            assert published.json()["error"]["code"] == "dependency_unavailable"
            assert publish_took < PUBLISH_TIMEOUT_SECONDS, publish_took  # the reconnect wait, not the timeout
            assert _is_outage(readiness), (readiness.status_code, readiness.text)
            assert readiness.json()["checks"]["event_bus"] != "ok"
            assert readiness.json()["checks"]["database"] == "ok"

            await rabbitmq.start()
            reconnect_seconds = await _until(ready, "readiness after the broker came back")

            async def all_succeeded() -> bool:
                statuses = [(await client.get(f"/executions/{execution_id}")).json() for execution_id in accepted]
                return all(record["status"] == "succeeded" for record in statuses)

            drained_seconds = reconnect_seconds + await _until(all_succeeded, "the accepted invocations")
            records = [(await client.get(f"/executions/{execution_id}")).json() for execution_id in accepted]

            after = await client.post("/agents/echo-helper/invoke", json={"task_data": {"prompt": "after"}, "wait": 10})
            published_after = await client.post("/events", json={"topic": "outage.test", "payload": {"n": 2}})

    # Shown with -s: the figures docs/operations.md quotes.
    print(
        f"\nbroker outage: POST /events refused in {publish_took:.2f} s; ready {reconnect_seconds:.1f} s "
        f"after the broker answered; accepted invocations done {drained_seconds:.1f} s after it"
    )
    assert [(record["output"], record["attempts"]) for record in records] == [(f"down-{i}", 1) for i in range(3)]
    assert (after.status_code, after.json()["status"]) == (200, "succeeded"), after.text
    assert published_after.status_code == 202, published_after.text
    connection = await asyncpg.connect(database.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        stored = await connection.fetch("SELECT input->>'prompt' AS prompt, count(*) AS n FROM executions GROUP BY 1")
    finally:
        await connection.close()
    assert {row["prompt"]: row["n"] for row in stored} == dict.fromkeys(
        ["before", "down-0", "down-1", "down-2", "after"], 1
    )
    assert unretrieved(loop_errors) == []


async def test_a_node_whose_broker_died_stops_within_a_bound(
    tmp_path: Path, database: str, rabbitmq: PrivateRabbitMQ, loop_errors: list[dict[str, Any]]
) -> None:
    node = Node(_settings(tmp_path, database, rabbitmq.url))
    await node.start()
    done: set[asyncio.Task[None]] = set()
    stop: asyncio.Task[None] | None = None
    try:
        await rabbitmq.stop("kill")  # and never started again
        await _until(lambda: _bus_down(node), "the node to see its broker gone")
        # Its reconnection loop has been trying (and failing) for a while.
        await asyncio.sleep(2 * RECONNECT_WAIT_SECONDS)
        began = time.monotonic()
        stop = asyncio.create_task(node.stop())
        done, _ = await asyncio.wait([stop], timeout=STOP_BOUND_SECONDS)
        took = time.monotonic() - began
    finally:
        if stop is not None and not done:
            stop.cancel()
            await asyncio.gather(stop, return_exceptions=True)
    print(f"\nnode stop with its broker gone: {took:.2f} s")
    assert done, f"Node.stop() still running {took:.1f} s after it was asked, its broker gone"
    done.pop().result()  # raised nothing
    assert unretrieved(loop_errors) == []


SLOW_AGENT = "name: slow\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"
LLM_SECONDS = 3.0


async def test_a_run_in_flight_when_the_broker_dies_does_not_hold_the_stop_and_runs_again_after(
    tmp_path: Path, database: str, rabbitmq: PrivateRabbitMQ, loop_errors: list[dict[str, Any]]
) -> None:
    """aio-pika cancels a consumer's handlers when their channel drops: the run in flight
    is cut short, left `running`, and its unacked message is delivered again once the
    broker is back, where it runs from the start (a second attempt) to its end. The node's
    stop in between does not wait on the broker."""
    with FakeOpenAI(api_key="sk-outage", reply="done") as fake:
        fake.slow(LLM_SECONDS)
        settings = _settings(
            tmp_path, database, rabbitmq.url, openai_api_key=SecretStr(fake.api_key), openai_base_url=fake.base_url
        )
        (tmp_path / "agents" / "slow.yml").write_text(SLOW_AGENT)
        node = Node(settings)
        await node.start()
        stop: asyncio.Task[None] | None = None
        done: set[asyncio.Task[None]] = set()
        try:
            accepted = await node.orchestrator.invoke("slow", {"prompt": "in flight"})

            async def asked() -> bool:
                return bool(fake.requests)

            await _until(asked, "the run to call its model")
            await rabbitmq.stop("kill")
            await _until(lambda: _bus_down(node), "the node to see its broker gone")
            began = time.monotonic()
            stop = asyncio.create_task(node.stop())
            done, _ = await asyncio.wait([stop], timeout=STOP_BOUND_SECONDS + LLM_SECONDS)
            took = time.monotonic() - began
        finally:
            if stop is not None and not done:
                stop.cancel()
                await asyncio.gather(stop, return_exceptions=True)
        assert done, f"Node.stop() still running {took:.1f} s after it was asked, a run in flight and its broker gone"
        done.pop().result()
        left = await _execution(database, accepted.execution_id)

        await rabbitmq.start()
        again = Node(settings)
        async with again.running():
            finished = await again.orchestrator.wait_for(accepted.execution_id, 60)
    assert (left["status"], left["attempts"]) == ("running", 1)
    assert (finished.status.value, finished.output, finished.attempts) == ("succeeded", "done", 2)
    assert (await _execution(database, accepted.execution_id))["status"] == "succeeded"
    assert unretrieved(loop_errors) == []


async def _execution(database: str, execution_id: str) -> asyncpg.Record:
    connection = await asyncpg.connect(database.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        row = await connection.fetchrow(
            "SELECT status, output, attempts, (SELECT count(*) FROM executions) AS records "
            "FROM executions WHERE execution_id = $1",
            execution_id,
        )
    finally:
        await connection.close()
    assert row is not None
    assert row["records"] == 1
    return row


async def _bus_down(node: Node) -> bool:
    try:
        await node.bus.ping()
    except Exception:  # any refusal is "down"
        return True
    return False


async def test_a_worker_process_whose_broker_died_exits_on_sigterm_within_its_drain_bound(
    tmp_path: Path, database: str, rabbitmq: PrivateRabbitMQ
) -> None:
    env = echo_worker_env(tmp_path, database, rabbitmq.url, RABBITMQ_EXCHANGE_PREFIX=f"test-{uuid4().hex[:12]}")
    log_path = tmp_path / "worker.log"
    worker, port = spawn_worker(env, log_path)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:

            async def answers(status: int) -> bool:
                assert worker.poll() is None, log_path.read_text()
                try:
                    return (await client.get("/health/ready")).status_code == status
                except httpx.TransportError:
                    return False

            await _until(lambda: answers(200), "the worker to be ready")
            await rabbitmq.stop("kill")
            await _until(lambda: answers(503), "the worker to see its broker gone")
        worker.send_signal(signal.SIGTERM)
        began = time.monotonic()
        while worker.poll() is None and time.monotonic() - began < STOP_BOUND_SECONDS:
            await asyncio.sleep(0.1)
        took = time.monotonic() - began
        print(f"\nworker exit after SIGTERM with its broker gone: {took:.2f} s")
        assert worker.poll() == 0, f"still running {took:.1f} s after SIGTERM:\n{log_path.read_text()[-3000:]}"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    log = log_path.read_text()
    assert "Task exception was never retrieved" not in log
    assert "Future exception was never retrieved" not in log
