"""A loopback server that speaks Amazon Bedrock Runtime's Converse wire format, for `boto3`.

It answers `POST /model/{modelId}/converse` with the Converse JSON and
`POST /model/{modelId}/converse-stream` with `application/vnd.amazon.eventstream` binary
frames (prelude with CRC32, typed headers, JSON payload, message CRC32) over chunked
transfer, like the service; errors as `{"message": ...}` with `x-amzn-ErrorType`. It
accepts any SigV4-signed request, records every request, and can be told to fail (by HTTP
status, or with an exception event inside a stream) or to be slow. Use
`with running() as fake:` (a `tests.fakes.vendor.FakeVendor`).
"""

from __future__ import annotations

import json
import re
import struct
import threading
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from agentrunner.adapters.providers.bedrock import BedrockProvider
from tests.fakes.vendor import Received, Reply, ScriptedAnswers
from tests.ports import free_port

ACCESS_KEY_ID = "AKIATEST"
SECRET_ACCESS_KEY = "test-secret"
REGION = "us-east-1"

_PATH = re.compile(r"^/model/(?P<model>[^/]+)/(?P<operation>converse|converse-stream)$")

# HTTP status -> (x-amzn-ErrorType, message), as Bedrock Runtime answers them.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "Input is too long for requested model."),
    401: ("UnrecognizedClientException", "The security token included in the request is invalid."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "Could not resolve the foundation model from the provided model identifier."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request."),
    424: ("ModelErrorException", "The model returned an error."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error while processing the request."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}


@dataclass
class FakeBedrock(ScriptedAnswers):
    """A running fake Bedrock Runtime (see `FakeVendor`); `endpoint_url` is what boto3 is
    pointed at."""

    name: str = "bedrock"
    model: str = "anthropic.claude-3-haiku-20240307-v1:0"
    requests: list[tuple[str, bool, dict[str, Any]]] = field(default_factory=list)  # (model, stream, body)

    def __post_init__(self) -> None:
        ScriptedAnswers.__init__(self)
        self._stream_failures: list[str] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        # A short poll interval: `shutdown` waits for one, at every test's teardown.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- FakeVendor ------------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        with self._lock:
            requests = list(self.requests)
        return [_received(model, stream, body) for model, stream, body in requests]

    def provider(self, *, timeout: float = 10.0) -> BedrockProvider:
        return _provider(self.endpoint_url, timeout)

    def unreachable_provider(self) -> BedrockProvider:
        return _provider(f"http://127.0.0.1:{free_port()}", 2.0)

    # -- beyond FakeVendor -----------------------------------------------------------

    def fail_stream_with(self, *exception_types: str) -> None:
        """Break the next streams after their first text piece with an exception event of
        this type (`throttlingException`, `modelStreamErrorException`, ...), as Bedrock does
        when a failure happens once the answer has started."""
        with self._lock:
            self._stream_failures.extend(exception_types)

    # -- answering -------------------------------------------------------------------

    def take(self, model: str, stream: bool, body: dict[str, Any]) -> tuple[int | None, str | None, Reply]:
        """Record a request; the status to fail it with (or None), the exception event to
        break its stream with (or None), and the reply."""
        reply, failure, delay = self.next_answer()
        with self._lock:
            self.requests.append((model, stream, body))
            broken = self._stream_failures.pop(0) if stream and self._stream_failures and failure is None else None
        if failure is None:
            self._closing.wait(delay)
        return failure, broken, reply


def _provider(endpoint_url: str, timeout: float) -> BedrockProvider:
    return BedrockProvider(
        region=REGION,
        endpoint_url=endpoint_url,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        timeout=timeout,
    )


def _flatten(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A Converse message in vendor-neutral terms: its text under its role, and each tool
    result as a `tool` message of its own."""
    flat: list[dict[str, Any]] = []
    texts: list[str] = []
    results = 0
    for block in message.get("content", []):
        if "text" in block:
            texts.append(block["text"])
        elif "toolResult" in block:
            results += 1
            content = block["toolResult"].get("content", [])
            failed = {"is_error": True} if block["toolResult"].get("status") == "error" else {}
            flat.append({"role": "tool", "content": "".join(part.get("text", "") for part in content)} | failed)
    if texts or not results:
        flat.append({"role": message.get("role", ""), "content": "".join(texts)})
    return flat


def _received(model: str, stream: bool, body: dict[str, Any]) -> Received:
    system = [block["text"] for block in body.get("system", []) if "text" in block]
    inference = body.get("inferenceConfig", {})
    return Received(
        model=model,
        system="\n".join(system) if system else None,
        messages=[flat for message in body.get("messages", []) for flat in _flatten(message)],
        temperature=inference.get("temperature"),
        max_tokens=inference.get("maxTokens"),
        tool_names=[t["toolSpec"]["name"] for t in body.get("toolConfig", {}).get("tools", []) if "toolSpec" in t],
        stream=stream,
        body=body,
    )


def _usage(reply: Reply) -> dict[str, int]:
    cached = reply.cache_read_tokens + reply.cache_write_tokens
    usage = {
        "inputTokens": reply.input_tokens,
        "outputTokens": reply.output_tokens,
        "totalTokens": reply.input_tokens + cached + reply.output_tokens,
    }
    if cached:  # optional fields, present when the request used the prompt cache
        usage |= {"cacheReadInputTokens": reply.cache_read_tokens, "cacheWriteInputTokens": reply.cache_write_tokens}
    return usage


def _tool_use_id() -> str:
    return f"tooluse_{uuid.uuid4().hex[:22]}"


def _converse(reply: Reply) -> dict[str, Any]:
    if reply.tool_call is None:
        content: list[dict[str, Any]] = [{"text": reply.text}]
    else:
        name, arguments = reply.tool_call
        content = [{"toolUse": {"toolUseId": _tool_use_id(), "name": name, "input": arguments}}]
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": "end_turn" if reply.tool_call is None else "tool_use",
        "usage": _usage(reply),
        "metrics": {"latencyMs": 5},
    }


def _pieces(text: str) -> list[str]:
    """The text in at least three pieces when it has three characters (word by word when it
    has three words), as a model streams it."""
    words = text.split(" ")
    if len(words) >= 3:
        return [word if index == len(words) - 1 else f"{word} " for index, word in enumerate(words)]
    step = max(1, -(-len(text) // 3))
    return [text[start : start + step] for start in range(0, len(text), step)] or [text]


def _stream_events(reply: Reply, broken: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event type, payload) of a ConverseStream answer; an `exception` type breaks it."""
    yield "messageStart", {"role": "assistant"}
    if reply.tool_call is None:
        for index, piece in enumerate(_pieces(reply.text)):
            yield "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}
            if broken and index == 0:
                yield f"exception:{broken}", {"message": f"The stream failed with {broken}."}
                return
    else:
        name, arguments = reply.tool_call
        start = {"toolUse": {"toolUseId": _tool_use_id(), "name": name}}
        yield "contentBlockStart", {"contentBlockIndex": 0, "start": start}
        raw = json.dumps(arguments)
        for offset in range(0, len(raw), 8):
            yield (
                "contentBlockDelta",
                {"contentBlockIndex": 0, "delta": {"toolUse": {"input": raw[offset : offset + 8]}}},
            )
    yield "contentBlockStop", {"contentBlockIndex": 0}
    yield "messageStop", {"stopReason": "end_turn" if reply.tool_call is None else "tool_use"}
    yield "metadata", {"usage": _usage(reply), "metrics": {"latencyMs": 5}}


def _header(name: str, value: str) -> bytes:
    encoded_name, encoded_value = name.encode(), value.encode()
    # type 7: a string, with a 2-byte length.
    return struct.pack(f"!B{len(encoded_name)}sBH", len(encoded_name), encoded_name, 7, len(encoded_value)) + (
        encoded_value
    )


def event_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    """One `application/vnd.amazon.eventstream` message: an `event` of `event_type`, or an
    `exception` when `event_type` is `exception:<type>`."""
    if event_type.startswith("exception:"):
        kind = {":exception-type": event_type.removeprefix("exception:"), ":message-type": "exception"}
    else:
        kind = {":event-type": event_type, ":message-type": "event"}
    headers = b"".join(_header(name, value) for name, value in {**kind, ":content-type": "application/json"}.items())
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack("!II", total, len(headers))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + headers + body
    return message + struct.pack("!I", zlib.crc32(message))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its timeout) before a slow answer closes the socket
        # under us: that is the test working, not a server fault.
        return


@contextmanager
def running() -> Iterator[FakeBedrock]:
    """A started fake (the FakeVendor entry point of the provider contract suite)."""
    fake = FakeBedrock()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


class _Handler(BaseHTTPRequestHandler):
    """Bedrock Runtime's HTTP surface; `fake` is set per server by `_handler`."""

    fake: FakeBedrock
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY the body waits for
    # the client's delayed ACK (~40 ms a call).
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length)
        match = _PATH.match(self.path.split("?", 1)[0])
        if match is None:
            self._error(404, "UnknownOperationException", f"Unknown operation {self.path}")
            return
        if not self.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 "):
            self._error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._error(400, "SerializationException", "The request body is not valid JSON.")
            return
        stream = match["operation"] == "converse-stream"
        failure, broken, reply = self.fake.take(unquote(match["model"]), stream, body)
        if failure is not None:
            code, message = _ERRORS.get(failure, _ERRORS[500 if failure >= 500 else 400])
            self._error(failure, code, message)
        elif stream:
            self._stream(_stream_events(reply, broken))
        else:
            self._send(200, "application/json", json.dumps(_converse(reply)).encode())

    def _error(self, status: int, code: str, message: str) -> None:
        headers = {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
        if status == 429:
            headers["retry-after"] = "1"
        self._send(status, "application/json", json.dumps({"message": message}).encode(), headers)

    def _send(self, status: int, content_type: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: Iterator[tuple[str, dict[str, Any]]]) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/vnd.amazon.eventstream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        for event_type, payload in events:
            frame = event_frame(event_type, payload)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:
        return


def _handler(fake: FakeBedrock) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"fake": fake})
