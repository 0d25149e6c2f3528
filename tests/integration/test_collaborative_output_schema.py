"""A collaborative agent with an `output_schema` (issue 24): its plan run's synthesis is
checked as an autonomous agent's answer is. An answer that does not follow the schema is
sent back with the problems found; the run's result and its execution's output are then
the parsed JSON (handed on to a chained agent too). One still wrong after `output_retries`
fails the run and its execution with `output_invalid` and the problems."""

from __future__ import annotations

import json
from pathlib import Path

from agentrunner.domain.llm import Completion, LLMRequest
from agentrunner.domain.plan import PlanRunStatus
from tests.integration.conftest import node_on
from tests.integration.test_collaborative import FAST, _client, _ended, _plan_call, _run_in, _worker
from tests.integration.test_structured_output import _chained, _until

SCHEMA = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}
PLAN = {"steps": [{"id": "facts", "agent": "researcher", "instruction": "find the facts"}]}
CORRECTION = "does not follow the required JSON schema"


def _team(name: str, retries: int) -> str:
    return (
        f"name: {name}\nagent_type: t\nexecution_mode: collaborative\n"
        f"llm_config: {{provider: scripted, model: {name}}}\n"
        "collaborative_config: {preferred_collaborators: [researcher]}\n"
        f"output_schema: {json.dumps(SCHEMA)}\noutput_retries: {retries}\n"
    )


READER = (
    "name: reader\nagent_type: t\nexecution_mode: autonomous\n"
    "llm_config: {provider: scripted, model: reader}\nevent_subscriptions: [agent.output.fixed]\n"
)


class Models:
    """The planner plans PLAN; the researcher answers; `fixed` synthesises prose, then the
    JSON once told what was wrong; `stubborn` keeps answering prose. Synthesis requests kept."""

    def __init__(self) -> None:
        self.syntheses: dict[str, list[LLMRequest]] = {"fixed": [], "stubborn": []}

    def __call__(self, request: LLMRequest) -> str | Completion:
        if any(tool.name == "submit_plan" for tool in request.tools):
            return _plan_call(PLAN)
        if request.model in ("researcher", "reader"):
            return f"{request.model} done"
        self.syntheses[request.model].append(request)
        told = CORRECTION in str(request.messages[-1].content)
        return '{"summary": "all done"}' if told and request.model == "fixed" else "All done, in prose."


async def test_a_synthesis_is_corrected_to_its_schema_or_fails_the_run_with_output_invalid(tmp_path: Path) -> None:
    models = Models()
    agents = {
        "fixed.yml": _team("fixed", 2),
        "stubborn.yml": _team("stubborn", 1),
        "researcher.yml": _worker("researcher", "finds facts"),
        "reader.yml": READER,
    }
    async with node_on("memory", tmp_path, agents, script=models, **FAST) as node, _client(node) as http:
        fixed = (await http.post("/agents/fixed/invoke", json={"task_data": {"prompt": "x"}, "wait": 0})).json()
        stubborn = (await http.post("/agents/stubborn/invoke", json={"task_data": {"prompt": "y"}, "wait": 0})).json()
        fixed_run = await _run_in(http, fixed["execution_id"], PlanRunStatus.SUCCEEDED, PlanRunStatus.FAILED)
        stubborn_run = await _run_in(http, stubborn["execution_id"], PlanRunStatus.SUCCEEDED, PlanRunStatus.FAILED)
        fixed_execution = await _ended(http, fixed["execution_id"])
        stubborn_execution = await _ended(http, stubborn["execution_id"])
        read = await _until(lambda: _chained(node))

    assert fixed_run.status is PlanRunStatus.SUCCEEDED, fixed_run.error
    assert (fixed_run.result, fixed_run.result_json) == ('{"summary":"all done"}', {"summary": "all done"})
    assert (fixed_execution["status"], fixed_execution["output_json"]) == ("succeeded", {"summary": "all done"})
    # The scripted provider has no structured output of its own: the schema is in the prompt.
    first, corrected = models.syntheses["fixed"]
    assert first.response_schema == SCHEMA
    assert '"summary"' in str(first.messages[0].content)
    assert CORRECTION in str(corrected.messages[-1].content)
    assert read.input["output_json"] == {"summary": "all done"}

    assert stubborn_run.status is PlanRunStatus.FAILED
    assert stubborn_run.error is not None
    assert stubborn_run.error.code == "output_invalid"
    assert (stubborn_execution["status"], stubborn_execution["error"]["code"]) == ("failed", "output_invalid")
    assert "is not JSON" in stubborn_execution["error"]["message"]
    assert len(models.syntheses["stubborn"]) == 2  # one answer, one correction
    # Both refused answers were paid for: the failed run counts their tokens (4 words each)
    # beside the same plan and step as the fixed run's (whose answers were 4 and 3 words).
    assert stubborn_run.usage.output_tokens == fixed_run.usage.output_tokens + 1
    # Its execution records the coordinator's own calls (the steps' executions their own).
    assert stubborn_execution["usage"]["output_tokens"] == 8
