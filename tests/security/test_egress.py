"""No server-side request forgery (issue 19, rule 3): webhooks, Slack replies and the
`http_request` tool reach public addresses only, unless the operator opens a network; the
connection goes to the address that was checked; a task_data shaped like a Slack request
posts nothing; callers and models read coarse reasons only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

from agentrunner.adapters.bus.memory import InMemoryEventBus
from agentrunner.adapters.egress import EgressGuard, _GuardedBackend
from agentrunner.adapters.slack.replies import SlackSdkReplies
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.adapters.tools.builtin import builtin_tool
from agentrunner.adapters.tools.catalog import ToolShelf
from agentrunner.adapters.webhooks import HttpxWebhookSender
from agentrunner.domain.agent import AgentConfig, ToolConfig
from agentrunner.domain.egress import EgressPolicy, EgressRefusedError, parse_networks
from agentrunner.domain.slack import SlackMessage
from agentrunner.node import Node
from agentrunner.ports.tools import ToolContext
from tests.conftest import loopback_http
from tests.fakes.slack_server import BOT_TOKEN, SIGNING_SECRET, FakeSlack, command_body, slack_headers
from tests.integration.conftest import node_on
from tests.mcp_server import McpHttpServer
from tests.ports import free_port

SECRET = "whsec-egress-0123456789"
PRIVATE_TARGETS = ["127.0.0.1", "169.254.169.254", "10.0.0.1", "[::1]", "localhost"]
AGENT = "name: assistant\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: e}\n"
CONTEXT = ToolContext(agent="smith", execution_id="e1", session_id="s1", trace_id="t1")
LOOPBACK = EgressPolicy(allowed_networks=parse_networks("127.0.0.0/8"))


class Receiver:
    """A loopback HTTP server that answers every request with `status` and a body that
    must never be shown to a caller; keeps what it received."""

    BODY = b"internal-secret-of-the-receiver"

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[tuple[str, str, dict[str, str]]] = []

    @contextmanager
    def serving(self) -> Iterator[Receiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                receiver.received.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(receiver.status)
                self.send_header("content-length", str(len(Receiver.BODY)))
                self.end_headers()
                self.wfile.write(Receiver.BODY)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        with loopback_http(Handler) as self.port:
            yield self


def _orchestrator(node: Node) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=node.apps()["orchestrator"])
    return httpx.AsyncClient(transport=transport, base_url="http://orchestrator", timeout=20)


async def _finished(http: httpx.AsyncClient, execution_id: str, *, settled: bool = True) -> dict[str, Any]:
    """The execution once it ended and (with `settled`) its webhook was delivered or given up."""

    async def probe() -> dict[str, Any] | None:
        record: dict[str, Any] = (await http.get(f"/executions/{execution_id}")).json()
        hook = record.get("webhook") or {}
        if record["status"] in ("queued", "running"):
            return None
        if settled and not (hook.get("delivered_at") or hook.get("gave_up_at") or len(hook.get("attempts", [])) > 0):
            return None
        return record

    deadline = asyncio.get_running_loop().time() + 20
    while (record := await probe()) is None:
        assert asyncio.get_running_loop().time() < deadline, "the execution did not settle"
        await asyncio.sleep(0.05)
    return record


async def _all_ended(http: httpx.AsyncClient, *, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        items = (await http.get("/executions")).json()["items"]
        if len(items) >= count and all(item["status"] not in ("queued", "running") for item in items):
            return
        assert asyncio.get_running_loop().time() < deadline, f"executions did not end: {items}"
        await asyncio.sleep(0.05)


# --- webhooks -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", PRIVATE_TARGETS)
async def test_a_webhook_url_to_an_internal_address_is_refused_at_invocation(host: str, tmp_path: Path) -> None:
    settings: dict[str, Any] = {"webhook_secret": SECRET, "webhook_allow_http": True}
    async with node_on("memory", tmp_path, {"a.yml": AGENT}, **settings) as node, _orchestrator(node) as http:
        answer = await http.post(
            "/agents/assistant/invoke",
            json={"task_data": {"prompt": "hi"}, "wait": 0, "webhook_url": f"http://{host}:8080/latest/meta-data"},
        )

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "egress_refused"


@pytest.mark.parametrize(
    "url",
    ["http://example.com/hook", "https://user:secret@example.com/hook", "ftp://example.com/hook"],
    ids=["plain-http", "userinfo", "scheme"],
)
async def test_a_webhook_must_be_https_without_credentials(url: str, tmp_path: Path) -> None:
    async with (
        node_on("memory", tmp_path, {"a.yml": AGENT}, webhook_secret=SECRET) as node,
        _orchestrator(node) as http,
    ):
        answer = await http.post(
            "/agents/assistant/invoke", json={"task_data": {"prompt": "hi"}, "wait": 0, "webhook_url": url}
        )

    assert answer.status_code in (400, 422), answer.text
    assert answer.status_code == 422 or answer.json()["error"]["code"] == "egress_refused"


async def test_a_webhook_to_a_name_that_resolves_to_loopback_is_refused_and_nothing_is_posted(tmp_path: Path) -> None:
    with Receiver().serving() as receiver:
        # The agent file's webhook_url names `localhost`: the address is checked on delivery.
        agent = AGENT + f"webhook_url: http://localhost:{receiver.port}/hook\n"
        settings: dict[str, Any] = {"webhook_secret": SECRET, "webhook_allow_http": True}
        async with node_on("memory", tmp_path, {"a.yml": agent}, **settings) as node, _orchestrator(node) as http:
            accepted = (await http.post("/agents/assistant/invoke", json={"task_data": {"prompt": "hi"}})).json()
            record = await _finished(http, accepted["execution_id"])

    assert receiver.received == []
    hook = record["webhook"]
    assert [attempt["error"] for attempt in hook["attempts"]] == ["refused: private address"]
    assert hook["gave_up_at"] is not None, "a refused address is not retried"


async def test_a_webhook_to_an_allowed_network_is_delivered_and_failures_stay_coarse(tmp_path: Path) -> None:
    with Receiver(status=500).serving() as receiver:
        settings: dict[str, Any] = {
            "webhook_secret": SECRET,
            "webhook_allow_http": True,
            "egress_allowed_networks": ("127.0.0.0/8",),
            "webhook_backoff_seconds": 60.0,
        }
        async with node_on("memory", tmp_path, {"a.yml": AGENT}, **settings) as node, _orchestrator(node) as http:
            closed = free_port()
            runs = {}
            for name, url in {
                "answered": f"http://127.0.0.1:{receiver.port}/hook",
                "nobody": f"http://127.0.0.1:{closed}/hook",
            }.items():
                body = {"task_data": {"prompt": "hi"}, "wait": 0, "webhook_url": url}
                runs[name] = (await http.post("/agents/assistant/invoke", json=body)).json()["execution_id"]
            answered = await _finished(http, runs["answered"])
            nobody = await _finished(http, runs["nobody"])

    assert [path for _, path, _ in receiver.received] == ["/hook"], "the operator's network is reachable"
    assert answered["webhook"]["attempts"][0]["error"] == "HTTP 5xx"
    assert nobody["webhook"]["attempts"][0]["error"] == "unreachable"
    shown = json.dumps([answered["webhook"]["attempts"], nobody["webhook"]["attempts"]])
    assert Receiver.BODY.decode() not in shown
    assert "Connect" not in shown, "never the driver's error"


async def test_a_webhook_sender_with_a_guard_of_its_own_loads_the_ca_roots_off_the_loop() -> None:
    # The node loads its guard's CA roots at start; a sender given a fresh guard does it on its
    # first post, in a thread: under the blocking-call guard (conftest.py), on the loop it fails.
    policy = EgressPolicy(allowed_networks=parse_networks("127.0.0.0/8"), allow_http_webhooks=True)
    sender = HttpxWebhookSender(EgressGuard(policy))
    try:
        with Receiver().serving() as receiver:
            status = await sender.post(f"http://127.0.0.1:{receiver.port}/hook", b"{}", {}, timeout_seconds=5)
    finally:
        await sender.close()
    assert status == 200
    assert [(method, path) for method, path, _ in receiver.received] == [("POST", "/hook")]


# --- http_request ---------------------------------------------------------------------------


@asynccontextmanager
async def _http_request(entry: dict[str, Any], guard: EgressGuard | None = None) -> AsyncIterator[Any]:
    store = SQLStateStore("sqlite+aiosqlite:///:memory:")
    bus = InMemoryEventBus()
    tool = builtin_tool(
        ToolConfig.model_validate({"name": "http_request", **entry}), store=store, bus=bus, egress=guard
    )
    assert tool is not None
    yield tool


@pytest.mark.parametrize("host", PRIVATE_TARGETS)
async def test_http_request_to_an_internal_address_is_refused_even_when_the_host_is_listed(host: str) -> None:
    listed = host.strip("[]")
    with Receiver().serving() as receiver:
        async with _http_request({"allowed_hosts": [listed]}) as tool:
            with pytest.raises(PermissionError, match=r"^refused: private address$"):
                await tool.call({"url": f"http://{host}:{receiver.port}/latest/meta-data"}, CONTEXT)
    assert receiver.received == []


async def test_http_request_reaches_an_internal_address_the_operator_allowed() -> None:
    with Receiver().serving() as receiver:
        async with _http_request({"allowed_hosts": ["localhost"]}, EgressGuard(LOOPBACK)) as tool:
            answer = json.loads(await tool.call({"url": f"http://localhost:{receiver.port}/ok"}, CONTEXT))
        async with _http_request({"allowed_hosts": ["127.0.0.1"], "allowed_networks": ["127.0.0.1/32"]}) as tool:
            again = json.loads(await tool.call({"url": f"http://127.0.0.1:{receiver.port}/ok"}, CONTEXT))

    assert (answer["status"], again["status"]) == (200, 200)
    assert answer["body"] == Receiver.BODY.decode(), "a permitted host's body is the tool's result"


async def test_http_request_errors_are_coarse() -> None:
    closed = free_port()
    async with _http_request({"allowed_hosts": ["127.0.0.1"]}, EgressGuard(LOOPBACK)) as tool:
        with pytest.raises(ConnectionError) as caught:
            await tool.call({"url": f"http://127.0.0.1:{closed}/"}, CONTEXT)
    assert str(caught.value) == "unreachable"


@pytest.mark.parametrize(
    "header",
    ["Host", "Authorization", "cookie", "Proxy-Authorization", "Connection", "Transfer-Encoding", "TE", "Upgrade"],
)
async def test_the_model_cannot_set_host_credentials_or_hop_by_hop_headers(header: str) -> None:
    with Receiver().serving() as receiver:
        async with _http_request({"allowed_hosts": ["127.0.0.1"]}, EgressGuard(LOOPBACK)) as tool:
            with pytest.raises(PermissionError, match="may not be set"):
                await tool.call(
                    {"url": f"http://127.0.0.1:{receiver.port}/", "headers": {header: "169.254.169.254"}}, CONTEXT
                )
            fine = json.loads(
                await tool.call({"url": f"http://127.0.0.1:{receiver.port}/", "headers": {"X-Trace": "1"}}, CONTEXT)
            )
    assert fine["status"] == 200
    assert len(receiver.received) == 1


async def test_http_request_allows_get_only_unless_the_entry_widens_it() -> None:
    with Receiver().serving() as receiver:
        url = f"http://127.0.0.1:{receiver.port}/"
        async with _http_request({"allowed_hosts": ["127.0.0.1"]}, EgressGuard(LOOPBACK)) as tool:
            with pytest.raises(PermissionError, match="method POST is not allowed"):
                await tool.call({"url": url, "method": "POST", "body": "x"}, CONTEXT)
            assert tool.definition.parameters["properties"]["method"]["enum"] == ["GET"]
        entry = {"allowed_hosts": ["127.0.0.1"], "allowed_methods": ["get", "post"]}
        async with _http_request(entry, EgressGuard(LOOPBACK)) as tool:
            posted = json.loads(await tool.call({"url": url, "method": "POST", "body": "x"}, CONTEXT))
    assert posted["status"] == 200
    assert [method for method, _, _ in receiver.received] == ["POST"]


async def test_http_request_refuses_userinfo() -> None:
    async with _http_request({"allowed_hosts": ["example.com"]}) as tool:
        with pytest.raises(ValueError, match="credentials"):
            await tool.call({"url": "https://admin:pw@example.com/"}, CONTEXT)


# --- DNS rebinding --------------------------------------------------------------------------


async def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    """A name answering a public address to the check, then 127.0.0.1: the connection is
    opened to the public address checked (one resolution per connection), never loopback."""
    answers = [["93.184.216.34"], ["127.0.0.1"]]
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        return answers.pop(0) if answers else ["127.0.0.1"]

    backend = _GuardedBackend(EgressGuard(EgressPolicy(), resolver=rebinding), ())

    class Recording:
        async def connect_tcp(self, host: str, port: int, **_: Any) -> httpcore.AsyncNetworkStream:
            asked.append(host)
            raise httpcore.ConnectError("not on the internet in tests")

    backend._backend = Recording()  # type: ignore[assignment]
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("rebind.example", 443, timeout=5)
    with pytest.raises(EgressRefusedError):
        await backend.connect_tcp("rebind.example", 443, timeout=5)

    assert asked == ["93.184.216.34"]


async def test_a_name_answering_a_public_and_a_private_address_is_refused() -> None:
    async def split(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    guard = EgressGuard(EgressPolicy(), resolver=split)
    await guard.load_tls()  # as the node does at start: clients never load CA roots on the loop
    async with guard.client(timeout=5) as client:
        with pytest.raises(EgressRefusedError):
            await client.get("https://split.example/")


async def test_an_https_call_pins_the_address_but_keeps_the_name_for_tls() -> None:
    """The URL keeps its host: TLS verifies the certificate for the name (and sends it as
    SNI), while the socket goes to the checked address (here one with nothing listening)."""
    seen: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        seen.append((host, port))
        return ["127.0.0.1"]

    guard = EgressGuard(LOOPBACK, resolver=resolver)
    await guard.load_tls()  # as the node does at start
    closed = free_port()
    async with guard.client(timeout=5) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"https://service.example:{closed}/")
    assert seen == [("service.example", closed)]


# --- Slack ----------------------------------------------------------------------------------


async def test_task_data_shaped_like_a_slack_request_posts_nothing(tmp_path: Path) -> None:
    with FakeSlack() as slack:
        settings: dict[str, Any] = {
            "slack_signing_secret": SIGNING_SECRET,
            "slack_bot_token": BOT_TOKEN,
            "slack_api_url": slack.api_url,
            "egress_allowed_networks": ("127.0.0.0/8",),
            "slack_commands": {"/ask": "assistant"},
        }
        agent = AGENT + "event_subscriptions: [customer.ticket]\n"
        async with node_on("memory", tmp_path, {"a.yml": agent}, **settings) as node, _orchestrator(node) as http:
            forged = {
                "prompt": "post this",
                "source": "slack",
                "response_url": slack.response_url("forged"),
                "channel_id": "C666",
                "thread_ts": "1700000000.000666",
                "origin": {"kind": "slack", "response_url": slack.response_url("forged-origin"), "channel_id": "C6"},
            }
            answer = await http.post("/agents/assistant/invoke", json={"task_data": forged, "wait": 10})
            assert answer.json()["status"] == "succeeded", answer.text
            # The same through an event an agent subscribes to.
            published = await http.post("/events", json={"topic": "customer.ticket", "payload": forged})
            assert published.status_code in (200, 202), published.text
            # A genuine command afterwards is answered: by then the forged one had its chance.
            body = command_body("/ask", "genuine", response_url=slack.response_url("genuine"))
            slack_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=node.apps()["slack"]), base_url="http://s")
            async with slack_http:
                headers = {"content-type": "application/x-www-form-urlencoded", **slack_headers(body)}
                ack = await slack_http.post("/slack/commands", content=body, headers=headers)
            assert ack.status_code == 200
            await slack.wait_for(1, "/response/genuine")
            await _all_ended(http, count=3)  # the invocation, the event's run, the command's
            await asyncio.sleep(0.3)

    assert slack.messages("/response/forged") == []
    assert slack.messages("chat.postMessage") == []
    assert answer.json().get("origin") is None, "the platform, not task_data, says where a run came from"


async def test_a_response_url_that_is_not_slacks_is_refused() -> None:
    with FakeSlack() as slack, Receiver().serving() as receiver:
        replies = SlackSdkReplies(bot_token=BOT_TOKEN, api_url=slack.api_url, guard=EgressGuard(LOOPBACK))
        try:
            for url in (
                f"http://127.0.0.1:{receiver.port}/elsewhere",
                "https://hooks.slack.com.evil.example/commands/1",
                "https://user@hooks.slack.com/commands/1",
            ):
                with pytest.raises(Exception, match="refused"):
                    await replies.respond(url, SlackMessage(text="leak"))
        finally:
            await replies.close()
    assert receiver.received == []


async def test_a_slack_response_url_on_a_private_address_is_refused_without_the_operators_exception() -> None:
    with FakeSlack() as slack:
        replies = SlackSdkReplies(bot_token=BOT_TOKEN, api_url=slack.api_url)
        try:
            with pytest.raises(Exception, match="refused: private address"):
                await replies.respond(slack.response_url("r1"), SlackMessage(text="hi"))
        finally:
            await replies.close()
        assert slack.messages() == []


# --- MCP ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_an_mcp_url_from_the_environment_goes_through_the_guard(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A literal URL in the agent file is the operator's (trusted as written); one taken from
    `${VAR}` reaches a private address only with the operator's network exception."""
    with McpHttpServer(transport=transport) as server:
        monkeypatch.setenv("EGRESS_TEST_MCP_URL", server.url)
        entry = {"name": "kit", "type": "mcp", "url": "${EGRESS_TEST_MCP_URL}"}
        refused = await _mcp_tools(entry, EgressGuard())
        allowed = await _mcp_tools(entry, EgressGuard(LOOPBACK))
        literal = await _mcp_tools({"name": "kit", "type": "mcp", "url": server.url}, EgressGuard())

    assert refused[0] == [], refused
    assert "127.0.0.1 is not a public address" in refused[1], "the operator reads why (GET /agents)"
    assert "kit__add" in allowed[0], allowed
    assert "kit__add" in literal[0], literal


async def _mcp_tools(entry: dict[str, Any], guard: EgressGuard) -> tuple[list[str], str]:
    """The tool names an MCP entry offers through `guard`, and why it is missing if it is."""
    store = SQLStateStore("sqlite+aiosqlite:///:memory:")
    shelf = ToolShelf(store=store, bus=InMemoryEventBus(), connect_timeout_seconds=10, egress=guard)
    config = AgentConfig.model_validate(
        {
            "name": "smith",
            "agent_type": "t",
            "execution_mode": "autonomous",
            "llm_config": {"provider": "echo", "model": "e"},
            "tools": [entry],
        }
    )
    try:
        missing = await shelf.load([config])
        return [tool.definition.name for tool in shelf.tools_for("smith")], " ".join(missing.get("smith", []))
    finally:
        await shelf.close()
