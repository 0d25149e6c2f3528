"""A loopback server that plays Slack for slack_sdk: it takes `response_url` posts
(`POST /response/<name>`) and speaks the Web API's `chat.postMessage` (`POST
/api/chat.postMessage`, bearer token, `{"ok": ...}` answers). It records every message and
can be told to answer the next calls with 429 + Retry-After (or other statuses) first.
Also here: signing a request exactly as Slack does, for tests that play Slack's side."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import urlencode

BOT_TOKEN = "xoxb-test-token"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"

T = TypeVar("T")


def slack_headers(body: bytes, secret: str = SIGNING_SECRET, *, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with `body`: HMAC-SHA256 of `v0:{timestamp}:{body}` with the
    app's signing secret, hex, prefixed `v0=`."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + stamp.encode() + b":" + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}


def command_body(command: str = "/ask", text: str = "What is the capital of France?", **fields: str) -> bytes:
    """A slash command's form body as Slack sends it."""
    form = {
        "token": "deprecated-verification-token",
        "team_id": "T0001",
        "team_domain": "example",
        "channel_id": "C2147483705",
        "channel_name": "general",
        "user_id": "U2147483697",
        "user_name": "steve",
        "command": command,
        "text": text,
        "api_app_id": "A123456",
        "response_url": "https://hooks.slack.com/commands/1234/5678",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        **fields,
    }
    return urlencode(form).encode()


@dataclass
class Posted:
    """One message Slack received: where (`response_url` path or `chat.postMessage`) and its body."""

    path: str
    body: dict[str, Any]
    authorization: str = ""
    at: float = field(default_factory=time.monotonic)


@dataclass
class FakeSlack:
    """Run with `with FakeSlack() as slack:`; response_urls are `slack.response_url(name)`,
    the Web API is at `slack.api_url`."""

    retry_after: int = 1
    failures: list[int] = field(default_factory=list)  # statuses to answer, one per call, before succeeding
    posted: list[Posted] = field(default_factory=list)
    refused: list[Posted] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        # Polled every 50 ms (not 0.5 s): each stop waits one poll, and the suite stops many.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    def response_url(self, name: str = "1234/5678") -> str:
        return f"{self.base_url}/response/{name}"

    def fail_with(self, *statuses: int) -> None:
        with self._lock:
            self.failures.extend(statuses)

    def messages(self, path_part: str = "") -> list[Posted]:
        with self._lock:
            return [post for post in self.posted if path_part in post.path]

    async def wait_for(self, count: int, path_part: str = "", timeout: float = 20.0) -> list[Posted]:
        """The first `count` messages whose path contains `path_part`, waiting for them."""
        return await eventually(lambda: m if len(m := self.messages(path_part)) >= count else None, timeout)

    def __enter__(self) -> FakeSlack:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(
        self, path: str, body: dict[str, Any], authorization: str
    ) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        post = Posted(path=path, body=body, authorization=authorization)
        with self._lock:
            failure = self.failures.pop(0) if self.failures else None
            if failure is not None:
                self.refused.append(post)
            elif not path.startswith("/api/") or authorization == f"Bearer {BOT_TOKEN}":
                self.posted.append(post)
        if failure == 429:
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(self.retry_after)}
        if failure is not None:
            return failure, {"ok": False, "error": "internal_error"}, {}
        if path.startswith("/response/"):
            return 200, "ok", {}
        if path != "/api/chat.postMessage":
            return 404, {"ok": False, "error": "unknown_method"}, {}
        if authorization != f"Bearer {BOT_TOKEN}":
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        ts = f"{time.time():.6f}"
        return 200, {"ok": True, "channel": body.get("channel"), "ts": ts, "message": {"text": body.get("text")}}, {}


async def eventually(probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll `probe` until it returns something truthy (returned), failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"nothing after {timeout} s"
        await asyncio.sleep(0.05)


@contextmanager
def running() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def _handler(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                body = {"raw": raw.decode("utf-8", "replace")}
            status, payload, headers = fake.answer(self.path, body, self.headers.get("authorization", ""))
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "text/plain" if isinstance(payload, str) else "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
