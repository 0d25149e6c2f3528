"""OpenTelemetry across processes: one invocation through the orchestrator and an autonomous
worker on RabbitMQ/PostgreSQL is one trace (HTTP request → publish → consume → model call),
exported over OTLP/HTTP to a collector; without OTEL_EXPORTER_OTLP_ENDPOINT neither the SDK
nor an exporter is even imported (FastAPI itself imports the OTel API when it is installed)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agentrunner.adapters.state.urls import run_schema_command
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.otlp_collector import FakeCollector, ReceivedSpan
from tests.integration.conftest import node_on
from tests.integration.processes import role_processes
from tests.ports import free_port

AGENT = "name: traced\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: openai, model: gpt-4o}\n"


@dataclass
class Traced:
    orchestrator: str
    collector: FakeCollector


@pytest.fixture
def traced_deployment(tmp_path: Path, postgres_url: str) -> Iterator[Traced]:
    run_schema_command(postgres_url, "upgrade")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "traced.yml").write_text(AGENT)
    port, health_port = free_port(), free_port()
    with FakeCollector() as collector, FakeOpenAI(api_key="sk-traced") as fake:
        env = {
            "ORCHESTRATOR_PORT": str(port),
            "OPENAI_API_KEY": fake.api_key,
            "OPENAI_BASE_URL": fake.base_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # the SDK's batch delay: export within 0.1 s
        }
        with role_processes(tmp_path, postgres_url, **env) as roles:
            roles.serve("orchestrator", log="orchestrator.log")
            roles.serve("autonomous", "--health-port", str(health_port), log="autonomous.log")
            roles.wait_ready(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{health_port}")
            yield Traced(f"http://127.0.0.1:{port}", collector)


def _one(spans: list[ReceivedSpan], trace_id: str, name: str) -> ReceivedSpan:
    found = [span for span in spans if span.trace_id == trace_id and span.name == name]
    assert len(found) == 1, f"{name}: {[(s.service, s.name, s.trace_id) for s in spans]}"
    return found[0]


def _has(trace_id: str, *names: str) -> Callable[[list[ReceivedSpan]], bool]:
    return lambda spans: all(any(s.trace_id == trace_id and s.name == n for s in spans) for n in names)


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_one_invoke_is_one_trace_from_the_http_request_to_the_model_call(traced_deployment: Traced) -> None:
    response = httpx.post(
        f"{traced_deployment.orchestrator}/agents/traced/invoke",
        json={"task_data": {"prompt": "hello"}, "wait": 30},
        timeout=40,
    )
    assert response.status_code == 200, response.text
    trace_id = response.json()["trace_id"]
    names = ("POST /agents/{name}/invoke", "publish invoke.traced", "process invoke.traced", "chat gpt-4o")
    spans = traced_deployment.collector.wait_for(_has(trace_id, *names))

    request, publish, process, chat = (_one(spans, trace_id, name) for name in names)
    assert response.headers["x-trace-id"] == trace_id, "the logs' trace id is the OTel trace id"
    assert (request.kind, publish.kind, process.kind, chat.kind) == ("server", "producer", "consumer", "client")
    assert request.parent_span_id == ""  # the edge starts the trace
    assert publish.parent_span_id == request.span_id
    assert process.parent_span_id == publish.span_id, "the context crossed RabbitMQ in the event headers"
    assert chat.parent_span_id == process.span_id
    assert {request.service, publish.service} == {"agentrunner-orchestrator"}
    assert {process.service, chat.service} == {"agentrunner-autonomous"}
    assert request.attributes["http.response.status_code"] == 200
    assert process.attributes["agentrunner.execution_id"] == response.json()["execution_id"]
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o"
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_a_caller_traceparent_continues_the_caller_trace(traced_deployment: Traced) -> None:
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    response = httpx.post(
        f"{traced_deployment.orchestrator}/agents/traced/invoke",
        json={"task_data": {"prompt": "continue"}, "wait": 30},
        headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"},
        timeout=40,
    )

    assert response.status_code == 200, response.text
    assert response.json()["trace_id"] == caller_trace
    assert response.headers["x-trace-id"] == caller_trace
    spans = traced_deployment.collector.wait_for(_has(caller_trace, "POST /agents/{name}/invoke", "chat gpt-4o"))
    assert _one(spans, caller_trace, "POST /agents/{name}/invoke").parent_span_id == caller_span


def test_without_an_otlp_endpoint_no_tracing_code_is_loaded(tmp_path: Path) -> None:
    probe = (
        "import asyncio, sys\n"
        "SDK = ('opentelemetry.sdk', 'opentelemetry.exporter', 'agentrunner.adapters.telemetry')\n"
        "from agentrunner.node import Node\n"
        "from agentrunner.settings import Settings\n"
        "async def main():\n"
        f"    node = Node(Settings(_env_file=None, data_dir={str(tmp_path)!r}, agents_dir={str(tmp_path)!r}))\n"
        "    async with node.running():\n"
        "        await node.orchestrator.publish_event('probe.topic', {})\n"
        "    assert node.tracing is None\n"
        "    print(sorted(name for name in sys.modules if name.startswith(SDK)))\n"
        "asyncio.run(main())\n"
    )
    env = {"PATH": "/usr/bin:/bin", "OTEL_EXPORTER_OTLP_ENDPOINT": ""}
    done = subprocess.run(
        [sys.executable, "-c", probe], check=False, capture_output=True, text=True, env=env, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", "no exporter, no SDK imported"


ECHO = "name: echoed\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"


async def _invoke_traced(tmp_path: Path, collector: FakeCollector, trace_header: str) -> httpx.Response:
    async with node_on(
        "memory", tmp_path, {"echoed.yml": ECHO}, otel_exporter_otlp_endpoint=collector.endpoint
    ) as node:
        transport = httpx.ASGITransport(app=node.apps()["orchestrator"])
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
            return await http.post(
                "/agents/echoed/invoke", json={"task_data": {"prompt": "hi"}}, headers={"X-Trace-Id": trace_header}
            )
    # Leaving the node flushed its spans to the collector.


async def test_a_caller_hex_trace_id_becomes_the_otel_trace_id(tmp_path: Path) -> None:
    chosen = "0af7651916cd43dd8448eb211c80319c"
    with FakeCollector() as collector:
        response = await _invoke_traced(tmp_path, collector, chosen)
        spans = collector.wait_for(_has(chosen, "POST /agents/{name}/invoke", "chat echo"))

    assert response.headers["x-trace-id"] == chosen
    assert response.json()["trace_id"] == chosen
    assert _one(spans, chosen, "chat echo").service == "agentrunner"


async def test_a_caller_trace_id_that_is_not_hex_is_kept_and_recorded_on_the_spans(tmp_path: Path) -> None:
    with FakeCollector() as collector:
        response = await _invoke_traced(tmp_path, collector, "order-42:checkout")
        spans = collector.wait_for(lambda spans: any(s.name == "chat echo" for s in spans))

    assert response.headers["x-trace-id"] == "order-42:checkout", "the caller's id is echoed, as without tracing"
    assert response.json()["trace_id"] == "order-42:checkout"
    [request] = [span for span in spans if span.name == "POST /agents/{name}/invoke"]
    assert request.attributes["agentrunner.trace_id"] == "order-42:checkout"
    trace = {span.trace_id for span in spans if span.name in ("POST /agents/{name}/invoke", "chat echo")}
    assert len(trace) == 1, "still one trace, under an id of OTel's own"
