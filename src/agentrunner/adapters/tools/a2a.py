"""Remote A2A agents as tools, through the official `a2a-sdk`: a tool entry `type: a2a`
whose `url` is the remote agent's card is the one tool `<name>`, taking a `message`; a
call sends it (`SendMessage` over JSON-RPC, blocking) and returns the answer's text.

Egress follows the MCP rules (mcp.py): a card URL written as such in the agent file is
the operator's choice and trusted; one with a `${VAR}` goes through the egress guard. The
JSON-RPC URL the card announces is the remote party's word, not the operator's: it is
trusted like the card URL only when it has the same scheme, host and port, and goes
through the guard otherwise, so a card cannot send the platform to a private address.
Neither client follows redirects. The card is read at the first call and kept while the
agents stay loaded (a reload builds the tool again)."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientError, AgentCardResolutionError
from a2a.helpers.proto_helpers import get_artifact_text, get_message_text
from a2a.types.a2a_pb2 import (
    AgentCard,
    AgentInterface,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from a2a.utils.constants import PROTOCOL_VERSION_1_0, VERSION_HEADER, TransportProtocol
from a2a.utils.errors import A2AError

from agentrunner.adapters.egress import EgressGuard
from agentrunner.adapters.tools.mcp import _REFERENCE, ToolFailedError, expand
from agentrunner.domain.agent import ToolConfig
from agentrunner.domain.egress import EgressRefusedError, split_url
from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.domain.llm import ToolDefinition
from agentrunner.ports.tools import Repeatable, ToolContext

MAX_MESSAGE_CHARS = 100_000
POLL_SECONDS = 0.5
_ENDED_BADLY = {
    TaskState.TASK_STATE_FAILED: "failed",
    TaskState.TASK_STATE_CANCELED: "was cancelled",
    TaskState.TASK_STATE_REJECTED: "refused the task",
    TaskState.TASK_STATE_AUTH_REQUIRED: "needs authentication",
}
_TERMINAL = {TaskState.TASK_STATE_COMPLETED, *_ENDED_BADLY}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def jsonrpc_interface(card: AgentCard) -> AgentInterface:
    """The card's JSON-RPC interface, A2A 1.0 preferred (raises `DependencyUnavailableError`)."""
    interfaces: list[AgentInterface] = [
        i for i in card.supported_interfaces if i.protocol_binding == TransportProtocol.JSONRPC
    ]
    for interface in interfaces:
        if interface.protocol_version.startswith(PROTOCOL_VERSION_1_0):
            return interface
    if not interfaces:
        raise DependencyUnavailableError("the agent card announces no JSON-RPC interface")
    return interfaces[0]


def answer_text(task: Task) -> str:
    """What a finished task answered: its artifacts' text, else its status message's."""
    texts = [get_artifact_text(artifact) for artifact in task.artifacts]
    text = "\n".join(t for t in texts if t)
    return text or get_message_text(task.status.message)


class A2aAgentTool:
    """One remote A2A agent, as the agent loop calls it."""

    def __init__(self, entry: ToolConfig, *, egress: EgressGuard, tls: ssl.SSLContext | None = None) -> None:
        self.entry = entry
        self._egress = egress
        self._tls = tls
        self._card: AgentCard | None = None
        self._lock = asyncio.Lock()

    @property
    def definition(self) -> ToolDefinition:
        return ToolDefinition(
            name=self.entry.name,
            description=self.entry.description
            or f"Ask the remote agent {self.entry.name!r} (A2A): send it a message, get its answer.",
            parameters={
                "type": "object",
                "properties": {
                    "message": {"type": "string", "description": "What to ask the agent, in full."},
                },
                "required": ["message"],
            },
        )

    @property
    def timeout_seconds(self) -> float:
        return self.entry.timeout_seconds

    @property
    def repeatable(self) -> Repeatable:
        return Repeatable.NEVER  # another agent acts on the message: never sent twice blindly

    def repeatable_call(self, arguments: dict[str, Any]) -> bool:
        return False

    def _headers(self) -> dict[str, str]:
        where = f"tool {self.entry.name!r} header"
        headers = {name: expand(value, f"{where} {name}") for name, value in self.entry.headers.items()}
        return headers | {VERSION_HEADER: PROTOCOL_VERSION_1_0}

    async def _client(self, *, guarded: bool) -> httpx.AsyncClient:
        """An HTTP client for the remote agent: through the egress guard, or (a URL the
        operator wrote) verifying TLS with the shared context; redirects off either way."""
        timeout = httpx.Timeout(self.entry.timeout_seconds + 5, connect=10.0)
        if guarded:
            await self._egress.load_tls()
            return self._egress.client(headers=self._headers(), timeout=timeout)
        if self._tls is None:
            self._tls = await asyncio.to_thread(httpx.create_ssl_context)
        return httpx.AsyncClient(
            headers=self._headers(), timeout=timeout, verify=self._tls, follow_redirects=False, trust_env=False
        )

    def _card_url(self) -> tuple[str, bool]:
        assert self.entry.url is not None  # ToolConfig requires it for `a2a`
        url = expand(self.entry.url, f"tool {self.entry.name!r} url")
        guarded = bool(_REFERENCE.search(self.entry.url))
        split_url(url)  # http(s), a host, no userinfo
        return url, guarded

    async def card(self) -> AgentCard:
        """The remote agent's card (read once)."""
        async with self._lock:
            if self._card is None:
                url, guarded = self._card_url()
                async with await self._client(guarded=guarded) as client:
                    try:
                        self._card = await A2ACardResolver(client, url).get_agent_card(relative_card_path="/")
                    except AgentCardResolutionError as exc:
                        raise DependencyUnavailableError(f"agent card unreadable: {_cause(exc)}") from exc
            return self._card

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> str:
        text = arguments.get("message")
        if not isinstance(text, str) or not text.strip():
            raise ToolFailedError("give the agent a non-empty `message`")
        if len(text) > MAX_MESSAGE_CHARS:
            raise ToolFailedError(f"the message is over {MAX_MESSAGE_CHARS} characters")
        return await self.ask(text)

    async def ask(self, text: str) -> str:
        """Send `text` to the remote agent and return its answer's text. Raises
        `ToolFailedError` when its task did not complete, `DependencyUnavailableError`
        when it cannot be reached, `EgressRefusedError` for a refused address."""
        card = await self.card()
        interface = jsonrpc_interface(card)
        card_url, card_guarded = self._card_url()
        split_url(interface.url)
        guarded = card_guarded or _origin(interface.url) != _origin(card_url)
        only = AgentCard()
        only.CopyFrom(card)
        del only.supported_interfaces[:]
        only.supported_interfaces.append(interface)  # the one checked here, nothing the SDK picks
        request = SendMessageRequest(
            message=Message(message_id=uuid.uuid4().hex, role=Role.ROLE_USER, parts=[Part(text=text)])
        )
        async with await self._client(guarded=guarded) as http:
            client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(only)
            try:
                answered = await self._sent(client, request)
                if isinstance(answered, str):  # a direct answer: no task
                    return answered
                task = answered
                while task.status.state not in _TERMINAL:
                    await asyncio.sleep(POLL_SECONDS)  # answered before it ended: ask until it does
                    task = await client.get_task(GetTaskRequest(id=task.id))
            except (A2AClientError, A2AError, httpx.HTTPError) as exc:
                raise DependencyUnavailableError(f"A2A agent {self.entry.name!r}: {_cause(exc)}") from exc
        if task.status.state in _ENDED_BADLY:
            why = get_message_text(task.status.message) or "no reason given"
            raise ToolFailedError(f"the agent {_ENDED_BADLY[task.status.state]}: {why}")
        return answer_text(task)

    @staticmethod
    async def _sent(client: Client, request: SendMessageRequest) -> Task | str:
        """The task the agent answered with, or its direct answer (a message) as text."""
        answer: StreamResponse | None = None
        async for response in client.send_message(request):
            answer = response  # not streaming: one response, the task (or a message)
        if answer is None:
            raise DependencyUnavailableError("the agent sent no answer")
        if answer.HasField("message"):
            return get_message_text(answer.message)
        return answer.task


def _cause(exc: BaseException) -> str:
    """The innermost message, EgressRefusedError's first: a refused address says so."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, EgressRefusedError):
            return seen.message
        seen = seen.__cause__ or seen.__context__
    return f"{type(exc).__name__}: {exc}"[:500]
