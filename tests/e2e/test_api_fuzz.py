"""Every role's API, fuzzed from its own OpenAPI with schemathesis against `agentrunner up`
(embedded mode, API keys on): no 5xx, and every answer (status code, content type, body)
as the schema says, errors included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.platform import ROLES, RunningPlatform, start_platform

pytestmark = pytest.mark.e2e

KEY = "fuzz-key-1"
AGENT = "name: echo-assistant\nagent_type: demo\nexecution_mode: autonomous\nllm_config: {provider: echo, model: e}\n"
EXAMPLES = 25  # per operation: enough to hit every parameter's edges, quick enough for CI


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    workdir = tmp_path_factory.mktemp("fuzz")
    (workdir / "agents").mkdir()
    (workdir / "agents" / "echo-assistant.yml").write_text(AGENT)
    running = start_platform(workdir, {"ENABLE_API_AUTH": "true", "API_KEYS": KEY, "LOG_LEVEL": "WARNING"})
    yield running
    assert running.stop() == 0, running.log_path.read_text()


@pytest.mark.parametrize("role", [role for role in ROLES if role != "slack"])
def test_no_operation_answers_5xx_or_outside_its_schema(platform: RunningPlatform, role: str) -> None:
    base = platform.url(role)
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", headers={"X-API-Key": KEY})
    failures: list[str] = []
    calls: list[int] = []
    operations = [result.ok() for result in schema.get_all_operations()]

    def exercise(case: schemathesis.Case) -> None:
        response = case.call(base_url=base, headers={"X-API-Key": KEY}, timeout=15)
        calls.append(response.status_code)
        if response.status_code >= 500:
            trace = response.headers.get("x-trace-id", "?")
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

    assert len(operations) >= 3, "the role's OpenAPI lists its operations"
    assert len(calls) >= len(operations) * 5, "every operation was called with many inputs"
    assert failures == [], "\n".join(failures[:10])
