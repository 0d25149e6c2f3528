"""What every role app does at the edge: trace ids, API keys, health, the error shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from agentrunner.api.access import ApiKey, FailedAuthThrottle, NetworkGuard
from agentrunner.api.edge import EdgeConfig, KeyRateLimiter, role_app
from agentrunner.domain.errors import DependencyUnavailableError
from agentrunner.tracing import current_caller

KEY_ONE = "key-one-0123456789abcdef0123456789ab"
KEY_TWO = "key-two-0123456789abcdef0123456789ab"
KEYS = (ApiKey("one", KEY_ONE.encode()), ApiKey("two", KEY_TWO.encode()))


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

    @app.get("/caller")
    async def caller() -> dict[str, Any]:
        who = current_caller()
        return {"tenant": who.tenant, "admin": who.admin}

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
        ({"X-API-Key": KEY_TWO}, 200),
        ({"Authorization": f"Bearer {KEY_ONE}"}, 200),
        ({"Authorization": f"bearer {KEY_ONE}"}, 200),
    ],
)
async def test_api_keys_are_required_when_auth_is_on(headers: dict[str, str], status: int) -> None:
    async with client(EdgeConfig(readiness={}, api_keys=KEYS)) as http:
        response = await http.get("/thing", headers=headers)

    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


async def test_health_probes_need_no_api_key() -> None:
    async with client(EdgeConfig(readiness={"database": _ok}, api_keys=KEYS[:1])) as http:
        assert (await http.get("/health/live")).status_code == 200
        assert (await http.get("/health/ready")).status_code == 200


async def test_a_public_path_and_what_is_under_it_need_no_key_but_a_longer_name_does() -> None:
    async with client(EdgeConfig(readiness={}, api_keys=KEYS[:1]), public=("/files",)) as http:
        statuses = {
            path: (await http.get(path)).status_code for path in ("/files", "/files/a.js", "/filesystem", "/thing")
        }

    assert statuses == {"/files": 200, "/files/a.js": 200, "/filesystem": 401, "/thing": 401}


async def test_each_api_key_has_its_own_rate_and_past_it_gets_429_with_retry_after() -> None:
    edge = EdgeConfig(readiness={}, api_keys=KEYS, rate_limit_per_minute=3)
    async with client(edge) as http:
        first_key = [(await http.get("/thing", headers={"X-API-Key": KEY_ONE})).status_code for _ in range(4)]
        limited = await http.get("/thing", headers={"X-API-Key": KEY_ONE})
        other_key = await http.get("/thing", headers={"X-API-Key": KEY_TWO})
        health = await http.get("/health/live", headers={"X-API-Key": KEY_ONE})

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


async def test_the_request_runs_as_its_keys_caller_a_tenant_or_an_admin() -> None:
    admin_key = "ops-key-0123456789abcdef0123456789abc"
    edge = EdgeConfig(readiness={}, api_keys=(*KEYS, ApiKey("ops", admin_key.encode(), admin=True)))
    async with client(edge) as http:
        tenant = (await http.get("/caller", headers={"X-API-Key": KEY_TWO})).json()
        admin = (await http.get("/caller", headers={"Authorization": f"Bearer {admin_key}"})).json()

    assert tenant == {"tenant": "two", "admin": False}
    assert admin == {"tenant": "ops", "admin": True}


async def test_an_address_that_keeps_failing_is_throttled_even_with_a_right_key_then() -> None:
    edge = EdgeConfig(readiness={}, api_keys=KEYS, failed_auth=FailedAuthThrottle(max_failures=3))
    async with client(edge) as http:
        failures = [(await http.get("/thing", headers={"X-API-Key": f"guess-{n}"})).status_code for n in range(4)]
        right = await http.get("/thing", headers={"X-API-Key": KEY_ONE})

    assert failures == [401, 401, 401, 429]
    assert right.status_code == 429
    assert right.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(right.headers["retry-after"]) <= 60


def test_failures_are_forgotten_after_their_window_and_memory_stays_bounded() -> None:
    now = [0.0]
    throttle = FailedAuthThrottle(max_failures=2, window_seconds=10, max_addresses=100, clock=lambda: now[0])
    throttle.failed("10.0.0.1")
    throttle.failed("10.0.0.1")
    blocked = throttle.wait_seconds("10.0.0.1")
    now[0] = 10.0
    for n in range(1000):
        throttle.failed(f"10.1.{n // 256}.{n % 256}")

    assert blocked == 10.0
    assert throttle.wait_seconds("10.0.0.1") == 0.0
    assert len(throttle._failures) == 100


def test_an_ipv6_client_is_counted_by_its_64_so_rotating_addresses_does_not_help() -> None:
    throttle = FailedAuthThrottle(max_failures=3)
    started = [throttle.failed(f"2001:db8:1:2::{n:x}") for n in range(3)]

    assert started == [False, False, True]
    assert throttle.wait_seconds("2001:db8:1:2:ffff::1") > 0
    assert throttle.wait_seconds("2001:db8:1:3::1") == 0.0


def guarded(**options: Any) -> httpx.AsyncClient:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = NetworkGuard(app, **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://127.0.0.1:8003")


@pytest.mark.parametrize(
    ("host", "status"),
    [("127.0.0.1:8003", 200), ("localhost", 200), ("[::1]:8003", 200), ("evil.example:8003", 400), ("", 400)],
)
async def test_a_host_header_not_allowed_is_refused(host: str, status: int) -> None:
    async with guarded(allowed_hosts=("localhost", "127.0.0.1", "::1"), require_client_header=False) as http:
        response = await http.get("/agents", headers={"Host": host})
        probe = await http.get("/health/live", headers={"Host": "evil.example"})

    assert response.status_code == status
    assert probe.status_code == 200
    if status == 400:
        assert response.json()["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "application/x-www-form-urlencoded"}, 403),
        ({"Content-Type": "text/plain"}, 403),
        ({"Content-Type": "multipart/form-data; boundary=x"}, 403),
        ({"Origin": "https://evil.example"}, 403),  # a bodyless fetch from a page
        ({"Content-Type": "application/json"}, 200),
        ({"Content-Type": "application/merge-patch+json"}, 200),
        ({"Content-Type": "text/plain", "X-AgentRunner-Client": "cli"}, 200),
        ({"Origin": "http://127.0.0.1:8003", "X-Requested-With": "fetch"}, 200),
        ({}, 200),  # no body and no browser: a script, which no page can make send this
    ],
)
async def test_with_auth_off_a_write_a_browser_could_forge_cross_site_is_refused(
    headers: dict[str, str], status: int
) -> None:
    async with guarded(allowed_hosts=None, require_client_header=True) as http:
        response = await http.post("/invoke/agent", headers=headers, content=b"x" if "Content-Type" in headers else b"")
        read = await http.get("/agents", headers={"Origin": "https://evil.example"})
        slack = await http.post("/slack/commands", headers={"Content-Type": "application/x-www-form-urlencoded"})

    assert response.status_code == status
    assert read.status_code == 200
    assert slack.status_code == 200
    if status == 403:
        assert response.json()["error"]["code"] == "cross_site_refused"


async def test_hsts_is_sent_when_set() -> None:
    async with guarded(allowed_hosts=None, require_client_header=False, hsts_seconds=31536000) as http:
        response = await http.get("/agents")
    async with guarded(allowed_hosts=None, require_client_header=False) as http:
        plain = await http.get("/agents")

    assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert "strict-transport-security" not in plain.headers
