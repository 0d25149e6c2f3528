"""The built-in tools an agent enables by name: `current_time`, `http_request` (to
allow-listed hosts only, through the egress guard), `publish_event` (to the bus), `get_state`/`set_state` (the
session's memory in the state store). `ask_human` is offered by the agent loop itself
to collaborative steps that may ask (runtime/agent_run.py).

Each knows whether its calls may be made again after a crash (`Repeatable`): the readers
(`current_time`, `get_state`, `http_request` GET and HEAD) may; `set_state`,
`publish_event` and `http_request` with any other method may not."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from agentrunner.adapters.egress import EgressGuard
from agentrunner.domain.agent import ToolConfig
from agentrunner.domain.egress import TIMEOUT, UNREACHABLE, EgressRefusedError, parse_networks, split_url
from agentrunner.domain.errors import ConflictError, StateNotFoundError
from agentrunner.domain.event import Event
from agentrunner.domain.llm import ToolDefinition
from agentrunner.domain.state import AgentState
from agentrunner.domain.topics import (
    CHAIN_DEPTH_HEADER,
    RESERVED_TOPIC_ROOTS,
    TENANT_HEADER,
    is_reserved_topic,
    topic_matches,
    topic_problem,
)
from agentrunner.ports.bus import EventBus
from agentrunner.ports.state import SessionStore
from agentrunner.ports.tools import Repeatable, ToolContext
from agentrunner.tracing import current_tenant

HTTP_MAX_RESPONSE_BYTES = 1_000_000
SAVE_ATTEMPTS = 5

Handler = Callable[[dict[str, Any], ToolContext], Awaitable[str]]

# The methods `http_request` may repeat: the safe methods of RFC 9110 §9.2.1 that it offers.
# PUT and DELETE are idempotent by the RFC, yet many APIs are not (a PUT that appends, a
# DELETE of "the latest"): their calls are not repeated on that word alone.
REPEATABLE_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class BuiltinTool:
    """A tool implemented in agentrunner."""

    definition: ToolDefinition
    timeout_seconds: float
    handler: Handler
    repeatable: Repeatable = Repeatable.NEVER
    # For PER_CALL: which calls may be made again, judged from their arguments.
    repeatable_when: Callable[[dict[str, Any]], bool] | None = None

    def repeatable_call(self, arguments: dict[str, Any]) -> bool:
        if self.repeatable is Repeatable.PER_CALL:
            return self.repeatable_when is not None and self.repeatable_when(arguments)
        return self.repeatable is Repeatable.ALWAYS

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> str:
        return await self.handler(arguments, context)


def _schema(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or [], "additionalProperties": False}


async def current_time(arguments: dict[str, Any], context: ToolContext) -> str:
    """The current time in ISO 8601, in the time zone asked (UTC by default)."""
    zone = str(arguments.get("timezone") or "UTC")
    try:
        # In a thread: a zone's first use reads its file from the system's tz database.
        now = datetime.now(await asyncio.to_thread(ZoneInfo, zone))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {zone!r}: use an IANA name such as 'UTC' or 'Europe/Paris'") from exc
    return json.dumps({"now": now.isoformat(), "timezone": zone, "weekday": now.strftime("%A")})


def host_allowed(host: str, allowed: list[str]) -> bool:
    """Whether `host` is one of `allowed` (exact names, or `*.domain` for its subdomains)."""
    host = host.lower().rstrip(".")
    for pattern in (entry.lower().rstrip(".") for entry in allowed):
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
        if host == pattern:
            return True
    return False


# Headers the model may not set: who the request is for (Host), credentials (the tool sends
# none of the platform's), proxy control and hop-by-hop headers that reshape the connection.
FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "authorization",
        "cookie",
        "connection",
        "transfer-encoding",
        "te",
        "upgrade",
        "keep-alive",
        "trailer",
        "content-length",
    }
)


def request_method(arguments: dict[str, Any]) -> str:
    """The HTTP method an `http_request` call asks for (GET when it names none): what it
    sends, and what decides whether the call may be made again."""
    return str(arguments.get("method") or "GET").upper()


def allowed_header(name: str) -> bool:
    """Whether the model may set header `name` (not Host, credentials, Proxy-* or hop-by-hop)."""
    lowered = name.strip().lower()
    return lowered not in FORBIDDEN_HEADERS and not lowered.startswith("proxy-")


class HttpRequest:
    """`http_request`: one HTTP call to an allow-listed host, through the egress guard (public
    addresses, or the networks the operator allowed), with the methods the entry allows (GET
    by default), its answer cut at 1 MB. A failure tells the model a coarse reason only."""

    def __init__(self, entry: ToolConfig, egress: EgressGuard) -> None:
        self._allowed = list(entry.allowed_hosts)
        self._methods = list(entry.allowed_methods)
        self._timeout = entry.timeout_seconds
        self._egress = egress
        self._networks = parse_networks(entry.allowed_networks)

    async def __call__(self, arguments: dict[str, Any], context: ToolContext) -> str:
        url = str(arguments["url"])
        try:
            parts = split_url(url)
        except EgressRefusedError as exc:
            raise ValueError(f"{url!r} is not an http(s) URL without credentials: {exc.message}") from None
        hostname = parts.hostname or ""
        if not host_allowed(hostname, self._allowed):
            allowed = ", ".join(self._allowed) or "none (set allowed_hosts on the tool entry)"
            raise PermissionError(f"host {hostname!r} is not allowed; allowed hosts: {allowed}")
        method = request_method(arguments)
        if method not in self._methods:
            raise PermissionError(f"method {method} is not allowed; allowed methods: {', '.join(self._methods)}")
        headers = arguments.get("headers") or {}
        refused = sorted(name for name in headers if not allowed_header(str(name)))
        if refused:
            raise PermissionError(
                f"headers {', '.join(refused)} may not be set (Host, credentials, Proxy-*, hop-by-hop)"
            )
        body = arguments.get("body")
        try:
            return await self._send(method, url, {str(k): str(v) for k, v in headers.items()}, body)
        except EgressRefusedError as exc:
            raise PermissionError(exc.reason) from None
        except httpx.TimeoutException:
            raise ConnectionError(TIMEOUT) from None
        except httpx.HTTPError:
            raise ConnectionError(UNREACHABLE) from None

    @property
    def repeatable(self) -> Repeatable:
        """ALWAYS when the entry allows only GET and HEAD (a call with another method is
        refused before it sends anything), else PER_CALL."""
        return Repeatable.ALWAYS if set(self._methods) <= REPEATABLE_METHODS else Repeatable.PER_CALL

    def repeatable_call(self, arguments: dict[str, Any]) -> bool:
        """Whether this call may be made again: a GET or a HEAD (or a method the entry
        refuses, which sends nothing)."""
        method = request_method(arguments)
        return method in REPEATABLE_METHODS or method not in self._methods

    async def _send(self, method: str, url: str, headers: dict[str, str], body: Any) -> str:
        # The tool catalog loads the guard's CA roots at start; a tool built with a guard of
        # its own loads them here, off the loop, once (a no-op afterwards).
        await self._egress.load_tls()
        async with (
            self._egress.client(timeout=self._timeout, extra=self._networks) as client,
            client.stream(
                method,
                url,
                headers=headers,
                content=body if isinstance(body, str) else None,
                json=body if body is not None and not isinstance(body, str) else None,
            ) as response,
        ):
            received = bytearray()
            async for chunk in response.aiter_bytes():
                received.extend(chunk)
                if len(received) > HTTP_MAX_RESPONSE_BYTES:
                    break
            truncated = len(received) > HTTP_MAX_RESPONSE_BYTES
            text = bytes(received[:HTTP_MAX_RESPONSE_BYTES]).decode(response.encoding or "utf-8", errors="replace")
            return json.dumps(
                {
                    "status": response.status_code,
                    "content_type": response.headers.get("content-type"),
                    "body": text,
                    "truncated": truncated,
                }
            )


class SessionMemory:
    """`get_state` / `set_state`: the free-form memory of the execution's session."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    async def _load(self, context: ToolContext) -> AgentState:
        # The session of the run's tenant; a run without a session has a memory of its own.
        session = context.session_id or f"execution:{context.execution_id}"
        tenant = current_tenant()
        try:
            return await self._store.load_state(context.agent, session, tenant=tenant)
        except StateNotFoundError:
            return AgentState(agent=context.agent, session_id=session, tenant=tenant)

    async def get(self, arguments: dict[str, Any], context: ToolContext) -> str:
        memory = (await self._load(context)).memory
        key = arguments.get("key")
        if key is None:
            return json.dumps(memory)
        return json.dumps({"key": key, "value": memory.get(str(key)), "found": str(key) in memory})

    async def set(self, arguments: dict[str, Any], context: ToolContext) -> str:
        key = str(arguments["key"])
        for _ in range(SAVE_ATTEMPTS):
            state = await self._load(context)
            memory = {**state.memory, key: arguments.get("value")}
            try:
                saved = await self._store.save_state(
                    state.model_copy(update={"memory": memory}), expected_version=state.version
                )
            except ConflictError:
                continue  # another writer of the session saved first: apply ours to theirs
            return json.dumps({"saved": key, "version": saved.version})
        raise ConflictError(f"session memory of {context.agent!r} kept changing: {key!r} not saved")


class PublishEvent:
    """`publish_event`: an event on the bus, for agents and services subscribed to its topic.
    Never on the platform's own topics; only on `allowed_topics` when the entry lists some.
    The event carries the execution's tenant and its chain depth: what it starts counts for
    that tenant, and a loop of agents stops at MAX_CHAIN_DEPTH."""

    def __init__(self, bus: EventBus, allowed_topics: list[str] | None = None) -> None:
        self._bus = bus
        self._allowed = list(allowed_topics or [])

    async def __call__(self, arguments: dict[str, Any], context: ToolContext) -> str:
        topic = str(arguments["topic"])
        problem = topic_problem(topic)
        if problem:
            raise ValueError(f"{problem} (no wildcards: a topic is the concrete name of one event)")
        if is_reserved_topic(topic):
            raise PermissionError(
                f"topic {topic!r} is reserved for agentrunner itself ({', '.join(RESERVED_TOPIC_ROOTS)})"
            )
        if self._allowed and not any(topic_matches(pattern, topic) for pattern in self._allowed):
            raise PermissionError(f"topic {topic!r} is not in this tool's allowed_topics: {', '.join(self._allowed)}")
        payload = arguments.get("payload")
        headers = {"source_execution": context.execution_id, CHAIN_DEPTH_HEADER: str(context.chain_depth + 1)}
        if context.tenant:
            headers[TENANT_HEADER] = context.tenant
        event = Event(
            topic=topic,
            payload={**(payload if isinstance(payload, dict) else {}), "source_agent": context.agent},
            trace_id=context.trace_id or context.execution_id or "tool",
            headers=headers,
        )
        await self._bus.publish(event)
        return json.dumps({"published": topic, "event_id": event.event_id})


BUILTIN_NAMES = frozenset({"current_time", "http_request", "publish_event", "get_state", "set_state", "ask_human"})

_DESCRIPTIONS = {
    "current_time": "The current date and time (ISO 8601) in a time zone, UTC by default.",
    "http_request": "Make an HTTP request to an allowed host; returns status, content type and body.",
    "publish_event": "Publish an event (a topic and a JSON payload) for other agents and services.",
    "get_state": "Read this session's memory: one key, or all of it when no key is given.",
    "set_state": "Remember a value under a key in this session's memory.",
}


def builtin_tool(
    entry: ToolConfig, *, store: SessionStore, bus: EventBus, egress: EgressGuard | None = None
) -> BuiltinTool | None:
    """The built-in tool `entry` names (None for `ask_human`, offered by the agent loop)."""
    handler: Handler
    parameters: dict[str, Any]
    # Not repeatable unless said below: a tool added here is not repeated until shown safe.
    repeatable: Repeatable = Repeatable.NEVER
    repeatable_when: Callable[[dict[str, Any]], bool] | None = None
    match entry.name:
        case "current_time":
            handler, parameters = current_time, _schema({"timezone": {"type": "string"}})
            repeatable = Repeatable.ALWAYS
        case "http_request":
            request = HttpRequest(entry, egress or EgressGuard())
            handler, repeatable, repeatable_when = request, request.repeatable, request.repeatable_call
            parameters = _schema(
                {
                    "url": {"type": "string"},
                    "method": {"type": "string", "enum": list(entry.allowed_methods)},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "body": {"description": "A string, or JSON"},
                },
                ["url"],
            )
        case "publish_event":
            handler = PublishEvent(bus, entry.allowed_topics)
            parameters = _schema({"topic": {"type": "string"}, "payload": {"type": "object"}}, ["topic"])
        case "get_state":
            handler, parameters = SessionMemory(store).get, _schema({"key": {"type": "string"}})
            repeatable = Repeatable.ALWAYS
        case "set_state":
            # Writing the same value again looks harmless, but between the lost call and its
            # repeat another writer may have changed the key: the repeat would undo that.
            handler = SessionMemory(store).set
            parameters = _schema({"key": {"type": "string"}, "value": {}}, ["key", "value"])
        case _:
            return None
    definition = ToolDefinition(
        name=entry.name, description=entry.description or _DESCRIPTIONS[entry.name], parameters=parameters
    )
    return BuiltinTool(
        definition=definition,
        timeout_seconds=entry.timeout_seconds,
        handler=handler,
        repeatable=repeatable,
        repeatable_when=repeatable_when,
    )
