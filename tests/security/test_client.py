"""The Python client (`agentrunner.client`) against hostile surroundings: a redirect never
carries the API key to another host, the key is in no repr, error or log line, a tenant's
client reaches only its own executions (an Idempotency-Key of one tenant names nothing of
another's), no key is a 401 and an oversized task a bounded 413."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from agentrunner.client import (
    APIError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    ConnectionFailedError,
    NotFoundError,
)
from agentrunner.node import Node
from tests.conftest import loopback_http
from tests.ports import free_port
from tests.security.conftest import TEAM_A_KEY, TEAM_B_KEY, tenants_settings

ECHO = "name: echo\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "echo.yml").write_text(ECHO)
    running = Node(tenants_settings(tmp_path))
    async with running.running():
        yield running


def _client(node: Node, key: str | None) -> AsyncClient:
    transport = httpx.ASGITransport(app=node.apps()["orchestrator"])
    return AsyncClient("http://orchestrator", api_key=key, transport=transport, retry_seconds=0)


@pytest.fixture
def redirecting() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A server that redirects every request to another host (port), which records the
    headers of whatever reaches it."""
    reached: list[dict[str, str]] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            reached.append(dict(self.headers))
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        do_POST = do_GET

        def log_message(self, *_: object) -> None:
            pass

    with loopback_http(Elsewhere) as elsewhere:

        class Redirect(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(307)
                self.send_header("location", f"http://localhost:{elsewhere}{self.path}")
                self.send_header("content-length", "0")
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *_: object) -> None:
                pass

        with loopback_http(Redirect) as port:
            yield f"http://127.0.0.1:{port}", reached


def test_a_redirect_is_not_followed_so_the_key_goes_nowhere_else(
    redirecting: tuple[str, list[dict[str, str]]],
) -> None:
    url, reached = redirecting
    with Client(url, api_key=TEAM_A_KEY, retry_seconds=0) as client:
        with pytest.raises(APIError) as listed:
            client.agents()
        with pytest.raises(APIError) as invoked:
            client.invoke("echo", "x")
        with pytest.raises(APIError) as streamed:
            list(client.stream("some-execution"))

    assert reached == [], "nothing reached the other host"
    assert {listed.value.status, invoked.value.status, streamed.value.status} == {307}
    assert "not followed" in listed.value.message


def test_the_key_is_in_no_repr_error_or_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx's and httpcore's own request logs too
    nobody = f"http://127.0.0.1:{free_port()}"
    with Client(nobody, api_key=TEAM_A_KEY, retry_seconds=0.3) as client:
        shown = [repr(client), str(client.__dict__), repr(client._http), repr(client._http.auth)]
        with pytest.raises(ConnectionFailedError) as failed:
            client.invoke("echo", "x")

    assert failed.value.url == nobody
    assert "retrying POST /agents/echo/invoke" in caplog.text, "its retries were logged"
    for text in [*shown, str(failed.value), repr(failed.value), caplog.text]:
        assert TEAM_A_KEY not in text


async def test_the_key_is_in_no_log_line_of_a_call_that_succeeds(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with _client(node, TEAM_A_KEY) as client:
        ended = await client.invoke("echo", "logged")
        await client.get_execution(ended.execution_id)

    assert ended.output == "logged"
    assert TEAM_A_KEY not in caplog.text


async def test_a_tenants_client_reaches_only_its_own_executions(node: Node) -> None:
    async with _client(node, TEAM_A_KEY) as alice, _client(node, TEAM_B_KEY) as bob:
        mine = await alice.invoke("echo", "alice's secret")
        for attempt in (
            bob.get_execution(mine.execution_id),
            bob.cancel(mine.execution_id),
            bob.approve(mine.execution_id),
            bob.deny(mine.execution_id, reason="mine now"),
        ):
            with pytest.raises(NotFoundError) as refused:
                await attempt
            assert refused.value.code == "execution_not_found"
        with pytest.raises(NotFoundError):
            [event async for event in bob.stream(mine.execution_id)]
        seen_by_bob = [item.execution_id async for item in bob.list_executions()]
        seen_by_alice = [item.execution_id async for item in alice.list_executions()]

    assert mine.execution_id not in seen_by_bob
    assert mine.execution_id in seen_by_alice


async def test_an_idempotency_key_of_one_tenant_names_nothing_of_another(node: Node) -> None:
    async with _client(node, TEAM_A_KEY) as alice, _client(node, TEAM_B_KEY) as bob:
        first = await alice.invoke("echo", "same words", idempotency_key="shared-key-1")
        again = await alice.invoke("echo", "same words", idempotency_key="shared-key-1")
        other = await bob.invoke("echo", "same words", idempotency_key="shared-key-1")

    assert again.execution_id == first.execution_id, "a retry of a call is answered with its execution"
    assert other.execution_id != first.execution_id, "another tenant's call with that key is its own"
    assert other.tenant == "team-b"


async def test_no_key_is_a_401_and_an_oversized_task_a_bounded_413(node: Node) -> None:
    async with _client(node, None) as anonymous, _client(node, TEAM_A_KEY) as alice:
        with pytest.raises(AuthenticationError) as unauthorized:
            await anonymous.invoke("echo", "x")
        with pytest.raises(BadRequestError) as too_large:
            await alice.invoke("echo", "x" * 2_000_000)

    assert (unauthorized.value.status, unauthorized.value.code) == (401, "unauthorized")
    assert (too_large.value.status, too_large.value.code) == (413, "payload_too_large")
    assert len(too_large.value.message) < 1000
