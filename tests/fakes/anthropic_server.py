"""A loopback server that speaks Anthropic's Messages API wire format, for the `anthropic` SDK.

It answers `POST /v1/messages` like the vendor: a JSON message, or server-sent events
(`message_start`, `content_block_*`, `message_delta`, `message_stop`) when the request asks
for a stream; error bodies of the vendor's shape; an API key check (`x-api-key` or bearer). It implements
`tests.fakes.vendor.FakeVendor`; start it with `running()`.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentrunner.adapters.providers.anthropic import AnthropicProvider
from tests.fakes.vendor import Received, Reply, ScriptedAnswers
from tests.ports import free_port

MODEL = "claude-3-haiku-20240307"
API_KEY = "sk-ant-test"

# HTTP status -> (Anthropic error type, message), as the vendor answers them.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any] | None = None  # a JSON answer
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # or server-sent events


class FakeAnthropic(ScriptedAnswers):
    """The running fake (see `running()`) and `AnthropicProvider`s pointed at it."""

    name = "anthropic"
    model = MODEL

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._stopping = threading.Event()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-anthropic", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def provider(self, *, timeout: float = 10.0) -> AnthropicProvider:
        return AnthropicProvider(api_key=API_KEY, base_url=self.base_url, timeout=timeout)

    def unreachable_provider(self) -> AnthropicProvider:
        return AnthropicProvider(api_key=API_KEY, base_url=f"http://127.0.0.1:{free_port()}", timeout=5.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers waiting in `slow`
        self._server.shutdown()
        with self._lock:
            connections = dict(self._connections)
        for connection in connections:
            # Idle keep-alive connections block their handler thread in a read: end them.
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in connections.values():
            thread.join(timeout=5)
        self._server.server_close()
        self._thread.join(timeout=5)

    def opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections[connection] = threading.current_thread()

    def closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.pop(connection, None)

    def answer(self, body: dict[str, Any], api_key: str) -> _Answer:
        with self._lock:
            self._received.append(_received(body))
        reply, failure, delay = self.next_answer()
        if delay:
            self._stopping.wait(delay)
        if api_key != API_KEY:
            return _error(401)
        if failure is not None:
            return _error(failure)
        message_id = f"msg_{uuid.uuid4().hex[:24]}"
        headers = {"request-id": f"req_{uuid.uuid4().hex[:24]}"}
        model = str(body.get("model", MODEL))
        if body.get("stream"):
            return _Answer(200, headers, events=_events(message_id, model, reply))
        return _Answer(200, headers, body=_message(message_id, model, reply))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (a timeout test, a closed stream) is expected, not a failure.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _error(status: int) -> _Answer:
    kind, message = _ERRORS.get(status, ("api_error" if status >= 500 else "invalid_request_error", "Error"))
    headers = {"request-id": f"req_{uuid.uuid4().hex[:24]}"}
    if status == 429:
        headers["retry-after"] = "1"
    if status in (429, 500, 503, 529):
        headers["x-should-retry"] = "true"
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": headers["request-id"]}
    return _Answer(status, headers, body=body)


def _content(reply: Reply) -> dict[str, Any]:
    if reply.tool_call is not None:
        name, arguments = reply.tool_call
        return {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": name, "input": arguments}
    return {"type": "text", "text": reply.text}


def _message(message_id: str, model: str, reply: Reply) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [_content(reply)],
        "stop_reason": "tool_use" if reply.tool_call else "end_turn",
        "stop_sequence": None,
        "usage": _usage(reply) | {"output_tokens": reply.output_tokens},
    }


def _usage(reply: Reply) -> dict[str, int]:
    return {
        "input_tokens": reply.input_tokens,
        "cache_read_input_tokens": reply.cache_read_tokens,
        "cache_creation_input_tokens": reply.cache_write_tokens,
    }


def _events(message_id: str, model: str, reply: Reply) -> list[tuple[str, dict[str, Any]]]:
    start = _message(message_id, model, reply) | {"content": [], "stop_reason": None}
    start["usage"] = _usage(reply) | {"output_tokens": 1}
    block = _content(reply)
    if block["type"] == "tool_use":
        arguments = json.dumps(block.pop("input"))
        block["input"] = {}
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in _pieces(arguments)]
    else:
        deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"])]
        block["text"] = ""
    return [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
        ("ping", {"type": "ping"}),
        *[("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}) for delta in deltas],
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if reply.tool_call else "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": reply.output_tokens},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def _pieces(text: str) -> list[str]:
    # Word by word, as a model streams; a text of fewer than three words goes char by char.
    words = re.findall(r"\s*\S+\s*", text)
    return words if len(words) >= 3 else list(text)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content or [] if block.get("type") == "text")


def _flatten(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            flat.append({"role": message["role"], "content": content})
            continue
        results = [block for block in content or [] if block.get("type") == "tool_result"]
        flat.extend(
            {"role": "tool", "content": _text(block.get("content"))}
            | ({"is_error": True} if block.get("is_error") else {})
            for block in results
        )
        text = _text(content)
        if text or not results:
            flat.append({"role": message["role"], "content": text})
    return flat


def _system_text(system: str | list[dict[str, Any]]) -> str:
    if isinstance(system, str):
        return system
    return "\n\n".join(block.get("text", "") for block in system)


def _received(body: dict[str, Any]) -> Received:
    system = body.get("system")
    return Received(
        model=str(body.get("model", "")),
        system=None if system is None else _system_text(system),
        messages=_flatten(body.get("messages", [])),
        temperature=body.get("temperature"),
        max_tokens=body.get("max_tokens"),
        tool_names=[tool["name"] for tool in body.get("tools", [])],
        stream=bool(body.get("stream", False)),
        body=body,
    )


def _api_key(headers: Message) -> str:
    # The API takes the key in `x-api-key`; SDK 2.x sends it as `Authorization: Bearer`.
    authorization = str(headers.get("authorization", ""))
    if authorization.lower().startswith("bearer "):
        return authorization[len("bearer ") :]
    return str(headers.get("x-api-key", ""))


def _handler(fake: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without TCP_NODELAY the body waits
        # for the client's delayed ACK (~40 ms a call).
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            # Headers and body go out as separate writes: without this, Nagle's algorithm and
            # delayed ACKs add ~40 ms to every answer.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            fake.opened(self.connection)

        def finish(self) -> None:
            fake.closed(self.connection)
            super().finish()

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path.split("?")[0].rstrip("/") != "/v1/messages":
                self._send(_error(404))
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(_error(400))
                return
            self._send(fake.answer(body, _api_key(self.headers)))

        def _send(self, answer: _Answer) -> None:
            self.send_response(answer.status)
            for key, value in answer.headers.items():
                self.send_header(key, value)
            if answer.body is not None:
                data = json.dumps(answer.body).encode()
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for event, payload in answer.events:
                chunk = f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def running() -> Iterator[FakeAnthropic]:
    """A started fake, stopped (its threads and sockets closed) on exit."""
    fake = FakeAnthropic()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
