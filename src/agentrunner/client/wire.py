"""What `Client` and `AsyncClient` share, with no I/O of its own: where to connect and with
which key, when to retry, how a server-sent event is read, what the answers parse into."""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ConfigDict

from agentrunner.client.errors import api_error_body, error_of, retry_after_of
from agentrunner.domain.execution import Execution

URL_ENV = "AGENTRUNNER_URL"
API_KEY_ENV = "AGENTRUNNER_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8003"  # the orchestrator's port of `agentrunner up`
# The id of the event before an execution's first: a stream resumed after it sends everything.
START = "0.0.0"
# How long a logical call keeps retrying a connection that fails or a 502/503 (Retry-After).
DEFAULT_RETRY_SECONDS = 30.0
FIRST_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 5.0
# The server pings a quiet stream every 15 s: a stream silent for longer is dead.
STREAM_READ_SECONDS = 45.0
# What an invocation asks the server to wait before it answers 202 and the client follows
# the execution's stream instead (which sees at once an execution that waits for a human).
INVOKE_WAIT_SECONDS = 10.0
# The server's own bound on `wait`.
MAX_SERVER_WAIT_SECONDS = 3600.0


def base_url_of(base_url: str | None) -> str:
    """`base_url`, else AGENTRUNNER_URL, else the orchestrator on this host."""
    return (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def api_key_of(api_key: str | None) -> str | None:
    """`api_key`, else AGENTRUNNER_API_KEY (None: the platform runs without auth)."""
    return api_key or os.environ.get(API_KEY_ENV) or None


class ApiKey(httpx.Auth):
    """Sends the key as `X-API-Key` on each request, never kept in the client's headers (so
    not in their repr) and never on a redirect: the clients do not follow redirects."""

    def __init__(self, key: str) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-API-Key"] = self._key
        yield request

    def __repr__(self) -> str:
        return "ApiKey('***')"


def client_options(base_url: str | None, api_key: str | None, timeout: float) -> dict[str, Any]:
    """The keyword arguments of the httpx client under `Client` / `AsyncClient`."""
    key = api_key_of(api_key)
    return {
        "base_url": base_url_of(base_url),
        "auth": ApiKey(key) if key else None,
        # "Not a browser form" to a platform that runs with auth off (api/access.py).
        "headers": {"X-AgentRunner-Client": "python", "Accept": "application/json"},
        "timeout": httpx.Timeout(timeout),
        "follow_redirects": False,
    }


def new_idempotency_key() -> str:
    """A key for one logical call, sent again with each of its retries."""
    return f"arc-{uuid.uuid4().hex}"


@dataclass
class Retries:
    """The retry window of one logical call: it ends `seconds` after its first attempt."""

    seconds: float
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0

    def delay(self, asked: float | None = None) -> float | None:
        """How long to wait before the next attempt (`asked`: a Retry-After), or None when
        the window is over."""
        self.attempts += 1
        backoff = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (self.attempts - 1))
        wait = asked if asked is not None else backoff * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
        left = self.seconds - (time.monotonic() - self.started)
        return min(wait, left) if left > 0 else None


def retried(response: httpx.Response) -> bool:
    """Whether an answer is worth the same request again: a 503 (a dependency down, with
    Retry-After), or a 502/504 that is not the platform's own (a proxy before a node that is
    restarting). The platform's own 502 and 504 (a provider failed, the work timed out) are
    answers: asked again, the work would run again."""
    if response.status_code == 503:
        return True
    return response.status_code in (502, 504) and api_error_body(response) is None


def refusal_delay(response: httpx.Response, retries: Retries) -> float:
    """How long to wait before sending again a request answered with an error or a redirect
    (its body read), or the `APIError` to raise: not worth a retry, or the window is over."""
    if retried(response) and (delay := retries.delay(retry_after_of(response))) is not None:
        return delay
    raise error_of(response)


def headers_of(method: str, idempotency_key: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A request's own headers: every POST carries its logical call's Idempotency-Key."""
    headers = dict(extra or {})
    if method.upper() == "POST" and idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return headers


@dataclass(frozen=True)
class StreamEvent:
    """One event of an execution's stream: `status`, `text`, `tool_call`, `ping` or
    `finished` (whose `data` is the execution's record), with its id (its place in the
    execution: resuming after it sends what follows, nothing twice)."""

    id: str
    event: str
    data: dict[str, Any]

    @property
    def execution(self) -> Execution | None:
        """The finished record, on a `finished` event."""
        return Execution.model_validate(self.data) if self.event == "finished" else None


class SseReader:
    """Server-sent events from the lines of a stream, one at each blank line."""

    def __init__(self) -> None:
        self._id = ""
        self._event = "message"
        self._data: list[str] = []

    def line(self, line: str) -> StreamEvent | None:
        """The event `line` ends, if it ends one."""
        if not line:
            if not self._data:
                self._event = "message"
                return None
            text = "\n".join(self._data)
            try:
                data = json.loads(text)
            except ValueError:
                data = {"text": text}
            event = StreamEvent(self._id, self._event, data if isinstance(data, dict) else {"value": data})
            self._event, self._data = "message", []
            return event
        if line.startswith(":"):  # a keep-alive comment
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


class InvokeResult(Execution):
    """An execution an invocation waited for, with what the invocation added to it (a
    collaborative agent's `plan_run_id`, `plan_run_status`, `steps`, ...)."""

    model_config = ConfigDict(frozen=True, extra="allow")


def invoke_body(
    prompt: str | None,
    task_data: Mapping[str, Any] | None,
    *,
    session_id: str | None,
    stream: bool,
    webhook_url: str | None,
    server_wait: float,
) -> dict[str, Any]:
    """The body of `POST /agents/{name}/invoke`."""
    if (prompt is None) == (task_data is None):
        raise ValueError("give either prompt or task_data")
    body: dict[str, Any] = {
        "task_data": {"prompt": prompt} if prompt is not None else dict(task_data or {}),
        "wait": server_wait,
    }
    if session_id is not None:
        body["session_id"] = session_id
    if stream:
        body["stream"] = True
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    return body


def server_wait(wait: bool, timeout: float | None) -> float:
    """What an invocation asks the server to wait: nothing without `wait`, else a short
    while within `timeout` (then the client follows the stream)."""
    if not wait:
        return 0.0
    return min(INVOKE_WAIT_SECONDS, timeout if timeout is not None else INVOKE_WAIT_SECONDS)


def params_of(**given: Any) -> dict[str, Any]:
    """Query parameters, those left None omitted."""
    return {name: value for name, value in given.items() if value is not None}


@dataclass
class Deadline:
    """The end of a wait (None: no end)."""

    timeout: float | None
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float | None:
        return None if self.timeout is None else self.timeout - (time.monotonic() - self.started)

    def read_timeout(self) -> float:
        """The read timeout of a stream within this wait: a dead stream is noticed, and the
        wait's end too."""
        left = self.left()
        return STREAM_READ_SECONDS if left is None else max(0.05, min(STREAM_READ_SECONDS, left))

    @property
    def over(self) -> bool:
        left = self.left()
        return left is not None and left <= 0
