"""A loopback server that speaks OpenAI's Chat Completions wire format, for the `openai` SDK.

It answers `POST /v1/chat/completions` like the vendor (ids, choices, usage, error bodies),
records every request, and can be told to fail (429, 500, 401) or to be slow.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeOpenAI:
    """Run with `with FakeOpenAI() as fake:`; point the SDK at `fake.base_url`."""

    reply: str = "Paris is the capital of France."
    failures: list[int] = field(default_factory=list)  # statuses to answer, one per call, before succeeding
    delay_seconds: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    api_key: str = "sk-test"

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
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

    def answer(self, body: dict[str, Any], authorization: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.requests.append(body)
            failure = self.failures.pop(0) if self.failures else None
        if authorization != f"Bearer {self.api_key}":
            return 401, _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"), {}
        if failure == 429:
            return 429, _error("Rate limit reached.", "requests", "rate_limit_exceeded"), {"retry-after": "1"}
        if failure is not None:
            return failure, _error("The server had an error.", "server_error", None), {}
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = len(self.reply.split())
        return (
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "gpt-4o"),
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.reply, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
            {"x-request-id": f"req_{uuid.uuid4().hex[:16]}"},
        )


def _error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, _error(f"Unknown path {self.path}", "invalid_request_error", None), {})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, _error("We could not parse the JSON body.", "invalid_request_error", None), {})
                return
            status, payload, headers = fake.answer(body, self.headers.get("authorization", ""))
            self._send(status, payload, headers)

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
