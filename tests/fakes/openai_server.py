"""A loopback server that speaks OpenAI's Chat Completions wire format, for the `openai` SDK.

It answers `POST /v1/chat/completions` like the vendor (ids, choices, tool calls, usage,
SSE streaming with `data:` chunks and `[DONE]`, error bodies), records every request, and
can be told to fail (429, 500, 401, 400) or to be slow. It implements
`tests.fakes.vendor.FakeVendor`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentrunner.adapters.providers.openai import OpenAIProvider
from tests.fakes.vendor import Received, Reply
from tests.ports import free_port

_ERRORS = {
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    400: ("This model's maximum context length is 8192 tokens.", "invalid_request_error", "context_length_exceeded"),
}


@dataclass
class FakeOpenAI:
    """Run with `with FakeOpenAI() as fake:`; point the SDK at `fake.base_url`."""

    reply: str = "Paris is the capital of France."
    failures: list[int] = field(default_factory=list)  # statuses to answer, one per call, before succeeding
    delay_seconds: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    api_key: str = "sk-test"
    tool_call: tuple[str, dict[str, Any]] | None = None
    usage: tuple[int, int] | None = None  # (input, output) tokens; None: counted from words
    name: str = "openai"
    model: str = "gpt-4o"
    # Answers per request: body -> (text, tool call or None); else `reply` and `tool_call`.
    script: Callable[[dict[str, Any]], tuple[str, tuple[str, dict[str, Any]] | None]] | None = None
    # A streamed answer stops after its n-th piece of text until `pauses[n]` is set (or 60 s);
    # `streamed` counts the pieces of text sent, over every answer.
    pauses: dict[int, threading.Event] = field(default_factory=dict)
    # Answers of the next calls, in order (`reply_in_turn`), before `script` or `reply`.
    turns: list[Reply] = field(default_factory=list)
    streamed: int = 0

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        # Polled every 50 ms (not 0.5 s): each stop waits one poll, and the suite stops many.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- FakeVendor ------------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        return [_received(body) for body in self.requests]

    def reply_with(
        self,
        text: str = "Paris is the capital of France.",
        *,
        tool_call: tuple[str, dict[str, Any]] | None = None,
        input_tokens: int = 11,
        output_tokens: int = 7,
    ) -> None:
        self.reply, self.tool_call, self.usage = text, tool_call, (input_tokens, output_tokens)

    def reply_in_turn(self, *replies: Reply) -> None:
        with self._lock:
            self.turns.extend(replies)

    def fail_with(self, *statuses: int) -> None:
        self.failures.extend(statuses)

    def slow(self, seconds: float) -> None:
        self.delay_seconds = seconds

    def provider(self, *, timeout: float = 10.0) -> OpenAIProvider:
        return OpenAIProvider(api_key=self.api_key, base_url=self.base_url, timeout=timeout)

    def unreachable_provider(self) -> OpenAIProvider:
        return OpenAIProvider(api_key=self.api_key, base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=2)

    # -- answering -------------------------------------------------------------------

    def answer(self, body: dict[str, Any], authorization: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.requests.append(body)
            failure = self.failures.pop(0) if self.failures else None
        if authorization != f"Bearer {self.api_key}":
            return 401, _error(401), {}
        if failure is not None:
            return failure, _error(failure), {"retry-after": "1"} if failure == 429 else {}
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        return 200, self._completion(body), {"x-request-id": f"req_{uuid.uuid4().hex[:16]}"}

    def _usage(self, body: dict[str, Any], reply: str | None = None) -> dict[str, int]:
        if self.usage is not None:
            prompt, completion = self.usage
        else:
            prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
            completion = len((self.reply if reply is None else reply).split())
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _message(self, reply: str, tool_call: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
        if tool_call is None:
            return {"role": "assistant", "content": reply, "refusal": None}
        name, arguments = tool_call
        call = {"id": "call_fake1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        return {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:  # a streamed answer takes its turn in `chunks`
            turn = self.turns.pop(0) if self.turns and not body.get("stream") else None
        if turn is not None:
            reply, tool_call = turn.text, turn.tool_call
        else:
            reply, tool_call = self.script(body) if self.script else (self.reply, self.tool_call)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": self._message(reply, tool_call),
                    "logprobs": None,
                    "finish_reason": "tool_calls" if tool_call else "stop",
                }
            ],
            "usage": self._usage(body, reply),
        }

    def chunks(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The SSE chunks of a streamed answer: role, pieces of text (or a tool call), stop, usage."""
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk", "created": 0}
        base["model"] = body.get("model", self.model)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        with self._lock:
            turn = self.turns.pop(0) if self.turns else None
        if turn is not None:
            reply, tool_call = turn.text, turn.tool_call
        else:
            reply, tool_call = self.script(body) if self.script else (self.reply, self.tool_call)
        yield chunk({"role": "assistant", "content": ""})
        if tool_call is not None:
            name, arguments = tool_call
            raw = json.dumps(arguments)
            first = {"index": 0, "id": "call_fake1", "type": "function", "function": {"name": name, "arguments": ""}}
            yield chunk({"tool_calls": [first]})
            for start in range(0, len(raw), 8):
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": raw[start : start + 8]}}]})
            yield chunk({}, "tool_calls")
        else:
            words = reply.split(" ")
            for index, word in enumerate(words):
                yield chunk({"content": word if index == len(words) - 1 else f"{word} "})
                self.streamed += 1
                pause = self.pauses.get(index + 1)
                if pause is not None:
                    pause.wait(60)
            yield chunk({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            yield {**base, "choices": [], "usage": self._usage(body, reply)}


def _received(body: dict[str, Any]) -> Received:
    messages = body.get("messages", [])
    system = next((m["content"] for m in messages if m.get("role") == "system"), None)
    return Received(
        model=body.get("model", ""),
        system=system,
        messages=[
            {"role": m["role"], "content": m.get("content") or ""} for m in messages if m.get("role") != "system"
        ],
        temperature=body.get("temperature"),
        max_tokens=body.get("max_tokens"),
        tool_names=[t["function"]["name"] for t in body.get("tools", [])],
        stream=bool(body.get("stream")),
        body=body,
    )


def _error(status: int) -> dict[str, Any]:
    message, kind, code = _ERRORS.get(
        status, ("The server had an error while processing your request.", "server_error", None)
    )
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@contextmanager
def running() -> Iterator[FakeOpenAI]:
    """A started fake (the FakeVendor entry point of the provider contract suite)."""
    with FakeOpenAI() as fake:
        yield fake


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without TCP_NODELAY the body waits
        # for the client's delayed ACK (~40 ms a call).
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(
                    404, {"error": {"message": f"Unknown path {self.path}", "type": "invalid_request_error"}}, {}
                )
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, _error(400), {})
                return
            status, payload, headers = fake.answer(body, self.headers.get("authorization", ""))
            if status == 200 and body.get("stream"):
                self._stream(fake.chunks(body))
                return
            self._send(status, payload, headers)

        def _stream(self, chunks: Iterator[dict[str, Any]]) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for chunk in chunks:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
            except (BrokenPipeError, ConnectionResetError):  # the client died mid-answer (a killed worker)
                return

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
