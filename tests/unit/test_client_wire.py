"""The Python client's parts without a server: it imports none of the platform, reads
server-sent events as EventSource does, retries what is worth it within its window, and
turns the API's error shape into the exceptions users match."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

import agentrunner.client
from agentrunner.client import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    ServerError,
)
from agentrunner.client.errors import error_of
from agentrunner.client.wire import Retries, SseReader, StreamEvent, headers_of, invoke_body, refusal_delay, retried

HEAVY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "aio_pika",
    "redis",
    "structlog",
    "openai",
    "anthropic",
    "typer",
    "agentrunner.runtime",
    "agentrunner.adapters",
    "agentrunner.node",
    "agentrunner.settings",
)


def test_importing_the_client_loads_none_of_the_platform() -> None:
    code = "import sys, agentrunner.client; print('\\n'.join(sys.modules))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )

    assert "agentrunner.client" in loaded
    assert sorted(name for name in loaded if name.split(".")[0] in HEAVY or name.startswith(HEAVY)) == []


def test_the_public_surface_is_pinned() -> None:
    assert "Client" in agentrunner.client.__all__
    assert "AsyncClient" in agentrunner.client.__all__
    for name in agentrunner.client.__all__:
        assert hasattr(agentrunner.client, name), name


def _events(text: str) -> list[StreamEvent]:
    reader = SseReader()
    found = [reader.line(line) for line in text.split("\n")]
    return [event for event in found if event is not None]


def test_server_sent_events_are_read_with_their_ids_and_data() -> None:
    stream = (
        ": keep-alive\n"
        'event: status\nid: 0.0.0.1\ndata: {"status": "running"}\n\n'
        'event: text\nid: 1.1.4\ndata: {"text": "one "}\n\n'
        "data: first line\ndata: second line\n\n"
        'event: finished\nid: 1.2.0\ndata: {"execution_id": "e1", "agent": "a", "trace_id": "t"}\n\n'
    )

    events = _events(stream)

    assert [(e.event, e.id) for e in events] == [
        ("status", "0.0.0.1"),
        ("text", "1.1.4"),
        ("message", "1.1.4"),  # an event without an id keeps the last one, as EventSource does
        ("finished", "1.2.0"),
    ]
    assert events[1].data == {"text": "one "}
    assert events[2].data == {"text": "first line\nsecond line"}
    assert events[3].execution is not None
    assert events[3].execution.execution_id == "e1"
    assert events[0].execution is None


def _answer(status: int, body: object = None, **headers: str) -> httpx.Response:
    content = json.dumps(body).encode() if body is not None else b"<html>bad gateway</html>"
    return httpx.Response(status, content=content, headers=headers)


def _ours(status: int, code: str, **headers: str) -> httpx.Response:
    return _answer(status, {"error": {"code": code, "message": f"{code} happened", "trace_id": "t1"}}, **headers)


@pytest.mark.parametrize(
    ("response", "kind", "code"),
    [
        (_ours(404, "agent_not_found"), NotFoundError, "agent_not_found"),
        (_ours(401, "unauthorized"), AuthenticationError, "unauthorized"),
        (_ours(422, "validation_error"), BadRequestError, "validation_error"),
        (_ours(413, "payload_too_large"), BadRequestError, "payload_too_large"),
        (_ours(409, "idempotency_key_reused"), ConflictError, "idempotency_key_reused"),
        (_ours(429, "budget_exceeded", **{"retry-after": "7"}), RateLimitedError, "budget_exceeded"),
        (_ours(503, "dependency_unavailable"), ServerError, "dependency_unavailable"),
        (_answer(502), ServerError, "http_error"),
    ],
)
def test_an_error_answer_is_the_exception_of_its_status_with_the_apis_code(
    response: httpx.Response, kind: type[APIError], code: str
) -> None:
    error = error_of(response)

    assert type(error) is kind
    assert (error.status, error.code) == (response.status_code, code)
    assert error.from_api is (code != "http_error")
    if code == "budget_exceeded":
        assert error.retry_after == 7.0
        assert error.trace_id == "t1"


def test_only_unavailability_and_a_proxys_gateway_errors_are_retried() -> None:
    assert retried(_ours(503, "dependency_unavailable"))
    assert retried(_answer(502))  # a proxy before a restarting node
    assert retried(_answer(504))
    assert not retried(_ours(502, "llm_error")), "the platform's own 502 is an answer: the work would run again"
    assert not retried(_ours(504, "timed_out"))
    assert not retried(_ours(429, "budget_exceeded"))
    assert not retried(_ours(500, "internal_error"))


def test_retry_after_is_honoured_within_the_window_then_the_error_is_raised() -> None:
    retries = Retries(seconds=60)
    assert refusal_delay(_ours(503, "dependency_unavailable", **{"retry-after": "2"}), retries) == 2.0
    backoff = [retries.delay() for _ in range(8)]
    assert all(delay is not None and 0 < delay <= 5.0 for delay in backoff)

    over = Retries(seconds=0)
    assert over.delay() is None
    with pytest.raises(ServerError):
        refusal_delay(_ours(503, "dependency_unavailable"), over)
    with pytest.raises(NotFoundError):
        refusal_delay(_ours(404, "not_found"), Retries(seconds=60))


def test_every_post_carries_the_calls_idempotency_key_and_nothing_else_does() -> None:
    assert headers_of("POST", "k1") == {"Idempotency-Key": "k1"}
    assert headers_of("GET", "k1") == {}


def test_an_invocation_takes_a_prompt_or_task_data() -> None:
    assert invoke_body("hi", None, session_id=None, stream=False, webhook_url=None, server_wait=10) == {
        "task_data": {"prompt": "hi"},
        "wait": 10,
    }
    with pytest.raises(ValueError, match="either"):
        invoke_body("hi", {"prompt": "hi"}, session_id=None, stream=False, webhook_url=None, server_wait=0)
