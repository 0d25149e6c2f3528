"""Structured output through the platform: an agent whose `output_schema` is a schema file
answers, is corrected once, and its execution records the parsed JSON, journals both model
calls, and hands the JSON on to the agent chained after it and to its webhook; an answer still wrong after
`output_retries` fails the execution with `output_invalid` and the problems."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from agentrunner.domain.errors import BudgetExceededError
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.llm import LLMRequest
from agentrunner.domain.steps import JournalStepKind
from agentrunner.node import Node
from tests.conftest import loopback_http
from tests.integration.conftest import node_on

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}
FACTS = (
    "name: facts\nagent_type: t\nexecution_mode: autonomous\n"
    "llm_config: {provider: scripted, model: facts}\noutput_schema: schemas/city.json\n"
    "webhook_url: http://127.0.0.1:{port}/hook\n"
)
READER = (
    "name: reader\nagent_type: t\nexecution_mode: autonomous\n"
    "llm_config: {provider: scripted, model: reader}\nevent_subscriptions: [agent.output.facts]\n"
)
STUBBORN = (
    "name: stubborn\nagent_type: t\nexecution_mode: autonomous\n"
    "llm_config: {provider: scripted, model: stubborn}\n"
    f"output_schema: {json.dumps(SCHEMA)}\noutput_retries: 1\n"
)
# A dollar a token, and a budget of one: the first refused answer is already past it.
PRICEY = (
    "name: pricey\nagent_type: t\nexecution_mode: autonomous\n"
    "llm_config: {provider: scripted, model: stubborn,\n"
    "  pricing: {input_per_million: 1000000, output_per_million: 1000000}}\n"
    f"output_schema: {json.dumps(SCHEMA)}\noutput_retries: 1\nlimits: {{budget_usd: 1, budget_period: day}}\n"
)


def _models(requests: list[LLMRequest]) -> Callable[[LLMRequest], str]:
    def answer(request: LLMRequest) -> str:
        requests.append(request)
        if request.model == "reader":
            return "noted"
        if request.model == "stubborn":
            return '{"city": "Paris"}'
        corrected = "does not follow the required JSON schema" in request.messages[-1].content
        return '```json\n{"city": "Paris", "population": 2102650}\n```' if corrected else '{"city": "Paris"}'

    return answer


async def test_an_answer_is_corrected_recorded_as_json_and_handed_on_down_the_chain(
    platform: tuple[str, str], tmp_path: Path
) -> None:
    bus, database_url = platform
    (tmp_path / "agents" / "schemas").mkdir(parents=True)
    (tmp_path / "agents" / "schemas" / "city.json").write_text(json.dumps(SCHEMA))
    requests: list[LLMRequest] = []
    hooks: list[dict[str, Any]] = []
    webhooks = {"webhook_secret": "whsec-so", "webhook_allow_http": True, "egress_allowed_networks": "127.0.0.0/8"}
    with loopback_http(_receiver(hooks)) as port:
        agents = {"facts.yml": FACTS.replace("{port}", str(port)), "reader.yml": READER}
        async with node_on(
            bus, tmp_path, agents, script=_models(requests), database_url=database_url, **webhooks
        ) as node:
            started = await node.orchestrator.invoke("facts", {"prompt": "Largest city of France?"}, wait=20)
            execution = await _until(lambda: _one(node, "facts", started.execution_id))
            read = await _until(lambda: _chained(node))
            steps = await node.store.steps.steps(execution.execution_id)
            hook = await _until(lambda: _first(hooks))

    assert execution.status is ExecutionStatus.SUCCEEDED
    assert execution.output_json == {"city": "Paris", "population": 2102650}
    assert json.loads(execution.output or "") == execution.output_json
    # The scripted provider has no structured output of its own: the schema is in the prompt.
    first = next(request for request in requests if request.model == "facts")
    assert first.response_schema == SCHEMA
    assert '"population"' in first.messages[0].content
    # The correction is a model step of its own, journaled like the first answer.
    assert [step.kind for step in steps] == [JournalStepKind.MODEL, JournalStepKind.MODEL]
    assert read.input["output_json"] == {"city": "Paris", "population": 2102650}
    assert hook["execution"]["output_json"] == {"city": "Paris", "population": 2102650}


async def test_an_answer_still_invalid_after_output_retries_fails_with_output_invalid(
    platform: tuple[str, str], tmp_path: Path
) -> None:
    bus, database_url = platform
    requests: list[LLMRequest] = []
    async with node_on(
        bus, tmp_path, {"stubborn.yml": STUBBORN}, script=_models(requests), database_url=database_url
    ) as node:
        started = await node.orchestrator.invoke("stubborn", {"prompt": "Largest city of France?"}, wait=20)
        execution = await _until(lambda: _one(node, "stubborn", started.execution_id))

    assert execution.status is ExecutionStatus.FAILED
    assert execution.error is not None
    assert execution.error.code == "output_invalid"
    assert "'population' is a required property" in execution.error.message
    assert execution.output_json is None
    assert len(requests) == 2  # one answer, one correction; the task is not run again


async def test_a_failed_execution_records_what_its_model_calls_cost_and_its_budget_counts_it(
    platform: tuple[str, str], tmp_path: Path
) -> None:
    """Both answers were paid for although neither was kept: the failed execution records
    their tokens and cost, as a succeeded one does, so the agent's budget sees the spend
    (recorded as nothing, failing work could spend without a limit)."""
    bus, database_url = platform
    requests: list[LLMRequest] = []
    async with node_on(
        bus, tmp_path, {"pricey.yml": PRICEY}, script=_models(requests), database_url=database_url
    ) as node:
        started = await node.orchestrator.invoke("pricey", {"prompt": "Largest city of France?"}, wait=20)
        execution = await _until(lambda: _one(node, "pricey", started.execution_id))
        with pytest.raises(BudgetExceededError) as refused:
            await node.orchestrator.invoke("pricey", {"prompt": "And of Italy?"}, wait=0)

    assert execution.error is not None
    assert (execution.status, execution.error.code) == (ExecutionStatus.FAILED, "output_invalid")
    paid_in = sum(len(message.content.split()) for request in requests for message in request.messages)
    assert (execution.usage.input_tokens, execution.usage.output_tokens) == (paid_in, 4)  # two answers of 2 words
    assert execution.cost_usd == pytest.approx(paid_in + 4)
    assert f"spent ${paid_in + 4:.4f} of its $1.0000 daily budget" in refused.value.message


def _receiver(bodies: list[dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
            with lock:
                bodies.append(body)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


async def _first(bodies: list[dict[str, Any]]) -> dict[str, Any] | None:
    return bodies[0] if bodies else None


async def _one(node: Node, agent: str, execution_id: str) -> Execution | None:
    execution = await node.store.executions.get_execution(execution_id)
    return execution if execution is not None and execution.status.is_terminal else None


async def _chained(node: Node) -> Execution | None:
    page = await node.store.queries.list_executions(agent="reader")
    return next((item for item in page.items if item.status is ExecutionStatus.SUCCEEDED), None)


async def _until(probe: Callable[[], Awaitable[Any]], timeout: float = 20) -> Any:
    async with asyncio.timeout(timeout):
        while (found := await probe()) is None:
            await asyncio.sleep(0.05)
    return found
