"""Every role's API, fuzzed from its own OpenAPI with schemathesis against `agentrunner up`
(embedded mode, API keys on: two tenants and an admin, fuzzed as tenant team-a): no 5xx,
and every answer (status code, content type, body) as the schema says, errors included.
The Slack role answers only requests Slack signed: each generated request is signed with
the app's secret over its exact body, as Slack would, so the fuzz reaches the gateway
rather than stopping at 401."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.platform import ROLES, RunningPlatform, start_platform
from tests.fakes.slack_server import BOT_TOKEN, SIGNING_SECRET, FakeSlack, slack_headers
from tests.security.conftest import TEAM_A_KEY, TENANTS_ENV

pytestmark = pytest.mark.e2e

KEY = TEAM_A_KEY
AGENT = "name: echo-assistant\nagent_type: demo\nexecution_mode: autonomous\nllm_config: {provider: echo, model: e}\n"
EXAMPLES = 25  # per operation: enough to hit every parameter's edges, quick enough for CI


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    workdir = tmp_path_factory.mktemp("fuzz")
    (workdir / "agents").mkdir()
    (workdir / "agents" / "echo-assistant.yml").write_text(AGENT)
    with FakeSlack() as slack:
        env = {
            **TENANTS_ENV,
            # The fuzz makes hundreds of calls a minute with one key: not the default's test.
            "API_RATE_LIMIT_PER_MINUTE": "0",
            "LOG_LEVEL": "WARNING",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_API_URL": slack.api_url,
            "SLACK_COMMANDS": "/ask=echo-assistant",
            "SLACK_DEFAULT_AGENT": "echo-assistant",
        }
        running = start_platform(workdir, env)
        yield running
        assert running.stop() == 0, running.log_path.read_text()


# A generated case of any operation (schemathesis leaves the operation's parameters open).
Case = schemathesis.Case[schemathesis.APIOperation[Any, Any, Any, Any]]
Send = Callable[[Case], httpx.Response | Any]


def _fuzz(platform: RunningPlatform, role: str, send: Send) -> tuple[list[int], list[str], int]:
    """Run every operation of `role` on generated inputs through `send`: the statuses
    answered, the failures (5xx, or an answer outside the schema), and the operations."""
    base = platform.url(role)
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", headers={"X-API-Key": KEY})
    failures: list[str] = []
    calls: list[int] = []
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"{base}/openapi.json: {result.err()}"
        operations.append(result.ok())

    def exercise(case: Case) -> None:
        response = send(case)
        calls.append(response.status_code)
        if response.status_code >= 500:
            trace = response.headers.get("x-trace-id", "?")
            trace = trace[0] if isinstance(trace, list) else trace  # schemathesis' own responses list values
            logged = [line for line in platform.log_path.read_text().splitlines() if trace in line]
            failures.append(f"{case.operation.label}: {response.status_code} {response.text[:300]}\n{logged[-1:]}")
            return
        try:
            case.validate_response(
                response, checks=[status_code_conformance, content_type_conformance, response_schema_conformance]
            )
        except Exception as exc:  # schemathesis reports each kind of mismatch as its own error
            failures.append(f"{case.operation.label}: {str(exc)[:400]}")

    for operation in operations:
        fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        fuzz(given(case=operation.as_strategy())(exercise))()
    return calls, failures, len(operations)


@pytest.mark.parametrize("role", [role for role in ROLES if role != "slack"])
def test_no_operation_answers_5xx_or_outside_its_schema(platform: RunningPlatform, role: str) -> None:
    base = platform.url(role)
    calls, failures, operations = _fuzz(
        platform, role, lambda case: case.call(base_url=base, headers={"X-API-Key": KEY}, timeout=15)
    )

    assert operations >= 3, "the role's OpenAPI lists its operations"
    assert len(calls) >= operations * 5, "every operation was called with many inputs"
    assert failures == [], "\n".join(failures[:10])


def _signed_by_slack(base: str) -> Send:
    """Send a generated case as Slack would: its body serialised once, then signed."""

    def send(case: Case) -> httpx.Response:
        request = case.as_transport_kwargs(base_url=base)
        headers = {name: value for name, value in request["headers"].items() if name.lower() != "content-length"}
        if "json" in request:
            body = json.dumps(request["json"]).encode()
        elif isinstance(request.get("data"), dict):
            body = urlencode(request["data"], doseq=True).encode()
        else:
            raw = request.get("data") or b""
            body = raw.encode() if isinstance(raw, str) else raw
        if case.operation.path.startswith("/slack/"):
            headers.update(slack_headers(body))
        else:
            headers["X-API-Key"] = KEY
        return httpx.request(
            request["method"], request["url"], params=request.get("params"), content=body, headers=headers, timeout=15
        )

    return send


def test_the_slack_role_answers_every_signed_request_within_its_schema(platform: RunningPlatform) -> None:
    calls, failures, operations = _fuzz(platform, "slack", _signed_by_slack(platform.url("slack")))

    assert operations >= 3, "the slack role's OpenAPI lists its routes"
    assert len(calls) >= operations * 5
    assert 200 in calls, "signed requests reached the gateway (not only 401s)"
    assert failures == [], "\n".join(failures[:10])
