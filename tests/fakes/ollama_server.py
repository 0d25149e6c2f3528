"""A loopback server that speaks Ollama's `/api/chat` wire format, for the `ollama` SDK.

It answers like the vendor: one JSON object when the request says `"stream": false`, else
NDJSON over chunked transfer (Ollama streams by default), the last line `done: true` with
the token counts; errors as `{"error": "..."}` with the status. It records every request
and can be told to fail or to be slow. Use `with running() as fake:` (a `FakeVendor`).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentrunner.adapters.providers.ollama import OllamaProvider
from tests.fakes.vendor import Received, Reply, ScriptedAnswers
from tests.ports import free_port

_ERRORS: dict[int, str] = {
    400: "model requires more context: the input length exceeds the context length",
    401: "unauthorized",
    403: "forbidden",
    429: "too many requests, please try again later",
    500: "llama runner process has terminated: exit status 2",
    502: "bad gateway",
    503: "server busy, please try again.  maximum pending requests exceeded",
}


@dataclass
class FakeOllama(ScriptedAnswers):
    """A running fake Ollama (see `FakeVendor`); `host` is what the SDK is pointed at."""

    name: str = "ollama"
    model: str = "llama3.1"
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        ScriptedAnswers.__init__(self)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        # A short poll interval: `shutdown()` waits up to one interval for the loop to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def host(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            bodies = list(self.requests)
        return [_received(body) for body in bodies]

    def provider(self, *, timeout: float = 10.0) -> OllamaProvider:
        return OllamaProvider(host=self.host, timeout=timeout)

    def unreachable_provider(self) -> OllamaProvider:
        return OllamaProvider(host=f"http://127.0.0.1:{free_port()}", timeout=5.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._closing.set()  # wakes handlers told to be slow
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any] | list[dict[str, Any]], dict[str, str]]:
        """The status, then one object (or the NDJSON lines when streaming), then headers."""
        with self._lock:
            self.requests.append(body)
        reply, failure, delay = self.next_answer()
        if delay:
            self._closing.wait(delay)
        model = str(body.get("model", ""))
        if failure == 404:
            return 404, {"error": f"model '{model}' not found"}, {}
        if failure is not None:
            headers = {"retry-after": "1"} if failure == 429 else {}
            return failure, {"error": _ERRORS.get(failure, "internal error")}, headers
        if body.get("stream", True):
            return 200, _stream_lines(model, reply), {}
        return 200, _answer(model, reply), {}


@contextmanager
def running() -> Iterator[FakeOllama]:
    """A fake Ollama serving on a loopback port for the duration of the block."""
    fake = FakeOllama()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def _received(body: dict[str, Any]) -> Received:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    system = [str(m.get("content", "")) for m in messages if m.get("role") == "system"]
    options = body.get("options") or {}
    return Received(
        model=str(body.get("model", "")),
        system="\n".join(system) if system else None,
        messages=[
            {"role": m.get("role"), "content": str(m.get("content") or "")}
            for m in messages
            if m.get("role") != "system"
        ],
        temperature=options.get("temperature"),
        max_tokens=options.get("num_predict"),
        tool_names=[str(t.get("function", {}).get("name", "")) for t in body.get("tools") or []],
        stream=bool(body.get("stream", True)),
        body=body,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _message(reply: Reply, content: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reply.tool_call is not None:
        name, arguments = reply.tool_call
        message["tool_calls"] = [{"function": {"name": name, "arguments": arguments}}]
    return message


def _final(model: str, reply: Reply, message: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": _now(),
        "message": message,
        "done_reason": "stop",
        "done": True,
        "total_duration": 412_345_678,
        "load_duration": 12_345_678,
        "prompt_eval_count": reply.input_tokens,
        "prompt_eval_duration": 100_000_000,
        "eval_count": reply.output_tokens,
        "eval_duration": 300_000_000,
    }


def _answer(model: str, reply: Reply) -> dict[str, Any]:
    # A tool call replaces the text, as Ollama answers with empty content when calling one.
    return _final(model, reply, _message(reply, "" if reply.tool_call else reply.text))


def _stream_lines(model: str, reply: Reply) -> list[dict[str, Any]]:
    def line(message: dict[str, Any]) -> dict[str, Any]:
        return {"model": model, "created_at": _now(), "message": message, "done": False}

    if reply.tool_call is not None:
        lines = [line(_message(reply, ""))]
    else:
        lines = [line({"role": "assistant", "content": piece}) for piece in _pieces(reply.text)]
    return [*lines, _final(model, reply, {"role": "assistant", "content": ""})]


def _pieces(text: str) -> list[str]:
    """`text` in at least three pieces (when it has three characters), as a model streams it."""
    words = re.findall(r"\s*\S+\s*", text) if text.strip() else []
    if len(words) >= 3:
        return words
    size = max(1, -(-len(text) // 3))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _handler(fake: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without TCP_NODELAY the body waits
        # for the client's delayed ACK (~40 ms a call).
        disable_nagle_algorithm = True
        timeout = 30  # an idle keep-alive connection does not hold its thread forever

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            raw = self.rfile.read(length)
            try:
                if self.path.rstrip("/") != "/api/chat":
                    self._send_text(404, "404 page not found")
                    return
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    self._send_json(400, {"error": f"invalid request body: {exc}"}, {})
                    return
                status, payload, headers = fake.answer(body)
                if isinstance(payload, list):
                    self._send_ndjson(payload)
                else:
                    self._send_json(status, payload, headers)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (a timeout): nothing to answer

        def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json; charset=utf-8")
            self.send_header("content-length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_text(self, status: int, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _send_ndjson(self, lines: list[dict[str, Any]]) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/x-ndjson")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for line in lines:
                data = json.dumps(line).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
