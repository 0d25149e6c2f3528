"""What every role app does at the edge: trace ids, API keys, health, the error shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from agentrunner.api.edge import EdgeConfig, KeyRateLimiter, role_app
from agentrunner.domain.errors import DependencyUnavailableError


async def _ok() -> None:
    return None


async def _db_down() -> None:
    raise DependencyUnavailableError("database is not answering")


def client(edge: EdgeConfig, public: tuple[str, ...] = ()) -> httpx.AsyncClient:
    app = role_app("orchestrator", "agentrunner test", edge, public=public)

    @app.get("/files/{name}")
    async def files(name: str) -> dict[str, str]:
        return {"file": name}

    @app.get("/files")
    async def file_list() -> dict[str, str]:
        return {"files": "all"}

    @app.get("/filesystem")
    async def filesystem() -> dict[str, str]:
        return {"secret": "data"}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    @app.get("/thing")
    async def thing() -> dict[str, str]:
        return {"thing": "ok"}

    @app.post("/echo")
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return body

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://test")


async def test_trace_id_from_the_caller_is_echoed_and_a_fresh_one_made_otherwise() -> None:
    async with client(EdgeConfig(readiness={})) as http:
        given = await http.get("/thing", headers={"X-Trace-Id": "abc-123"})
        made = await http.get("/thing")
        unsafe = await http.get("/thing", headers={"X-Trace-Id": "bad id with spaces"})

    assert given.headers["x-trace-id"] == "abc-123"
    assert len(made.headers["x-trace-id"]) == 32
    assert unsafe.headers["x-trace-id"] != "bad id with spaces"


async def test_unexpected_error_answers_500_in_the_error_shape_with_the_trace_id() -> None:
    async with client(EdgeConfig(readiness={})) as http:
        response = await http.get("/boom", headers={"X-Trace-Id": "t-500"})

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert response.json()["error"]["trace_id"] == "t-500"
    assert "kaboom" not in response.text


async def test_unknown_route_answers_404_in_the_error_shape() -> None:
    async with client(EdgeConfig(readiness={})) as http:
        response = await http.get("/nowhere")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_ready_is_503_and_names_the_dependency_that_is_down() -> None:
    async with client(EdgeConfig(readiness={"database": _db_down, "event_bus": _ok})) as http:
        ready = await http.get("/health/ready")
        live = await http.get("/health/live")

    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "database is not answering", "event_bus": "ok"}
    assert live.json() == {"status": "ok", "service": "orchestrator"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-API-Key": "wrong"}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"X-API-Key": "key-two"}, 200),
        ({"Authorization": "Bearer key-one"}, 200),
        ({"Authorization": "bearer key-one"}, 200),
    ],
)
async def test_api_keys_are_required_when_auth_is_on(headers: dict[str, str], status: int) -> None:
    async with client(EdgeConfig(readiness={}, api_keys=("key-one", "key-two"))) as http:
        response = await http.get("/thing", headers=headers)

    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


async def test_health_probes_need_no_api_key() -> None:
    async with client(EdgeConfig(readiness={"database": _ok}, api_keys=("key-one",))) as http:
        assert (await http.get("/health/live")).status_code == 200
        assert (await http.get("/health/ready")).status_code == 200


async def test_a_public_path_and_what_is_under_it_need_no_key_but_a_longer_name_does() -> None:
    async with client(EdgeConfig(readiness={}, api_keys=("key-one",)), public=("/files",)) as http:
        statuses = {
            path: (await http.get(path)).status_code for path in ("/files", "/files/a.js", "/filesystem", "/thing")
        }

    assert statuses == {"/files": 200, "/files/a.js": 200, "/filesystem": 401, "/thing": 401}


async def test_each_api_key_has_its_own_rate_and_past_it_gets_429_with_retry_after() -> None:
    edge = EdgeConfig(readiness={}, api_keys=("key-one", "key-two"), rate_limit_per_minute=3)
    async with client(edge) as http:
        first_key = [(await http.get("/thing", headers={"X-API-Key": "key-one"})).status_code for _ in range(4)]
        limited = await http.get("/thing", headers={"X-API-Key": "key-one"})
        other_key = await http.get("/thing", headers={"X-API-Key": "key-two"})
        health = await http.get("/health/live", headers={"X-API-Key": "key-one"})

    assert first_key == [200, 200, 200, 429]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 20
    assert other_key.status_code == 200
    assert health.status_code == 200


def test_a_key_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = KeyRateLimiter(60, clock=lambda: now[0])  # one a second, bursts of 60

    burst = [limiter.wait_seconds(0) for _ in range(60)]
    refused = limiter.wait_seconds(0)
    now[0] += 1.0
    after_a_second = limiter.wait_seconds(0)

    assert burst == [0.0] * 60
    assert 0 < refused <= 1.0
    assert after_a_second == 0.0


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b'{"text": "\\ud800"}', 400),  # a lone high surrogate
        (b'{"\\udfff": 1}', 400),  # a lone low one, as a key
        (b'{"deep": [{"x": ["ok", "\\ud83d"]}]}', 400),
        (b'{"emoji": "\\ud83d\\ude00", "path": "C:\\\\users"}', 200),  # a pair is fine, so are backslashes
    ],
)
async def test_json_bodies_with_lone_surrogates_are_refused_as_not_unicode(raw: bytes, status: int) -> None:
    async with client(EdgeConfig(readiness={})) as http:
        response = await http.post("/echo", content=raw, headers={"content-type": "application/json"})

    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"]["code"] == "bad_request"
        assert "surrogate" in response.json()["error"]["message"]
    else:
        assert response.json()["emoji"] == "\U0001f600"
