"""`output_schema` in an agent file: a JSON Schema checked when the file loads, or a schema
file beside it; and what an answer must be to follow it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentrunner.adapters.config.files import load_agent_directory
from agentrunner.adapters.providers.offline import ScriptedProvider
from agentrunner.domain.agent_document import AgentFileError, parse_agent_document
from agentrunner.domain.errors import OutputInvalidError
from agentrunner.domain.llm import answer_from_tool, answer_tool_schema
from agentrunner.domain.structured_output import MAX_PROBLEMS, check_answer
from agentrunner.runtime.agent_run import build_request, run_agent
from tests.unit.test_agent_document import agent_yaml

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def test_an_inline_schema_loads_and_reaches_the_request() -> None:
    document = parse_agent_document(agent_yaml(extra=f"output_schema: {json.dumps(SCHEMA)}\n"), "agents/a.yml")

    assert document.config.output_schema == SCHEMA
    assert document.config.output_retries == 2
    assert document.warnings == ()
    request = build_request(document.config, {"prompt": "count"})
    assert request.response_schema == SCHEMA
    # echo has no structured output of its own: it is told the schema.
    assert request.messages[0].role == "system"
    assert json.dumps(SCHEMA, sort_keys=True) in request.messages[0].content


def test_an_invalid_schema_is_refused_naming_the_file_and_the_field() -> None:
    with pytest.raises(AgentFileError) as caught:
        parse_agent_document(agent_yaml(extra='output_schema: {"type": "integr"}\n'), "agents/a.yml")

    [issue] = caught.value.issues
    assert (issue.source, issue.path, issue.line) == ("agents/a.yml", "output_schema", 7)
    assert "not a valid JSON Schema" in issue.message


def test_an_agent_without_output_schema_asks_as_before() -> None:
    document = parse_agent_document(agent_yaml(extra="system_prompt: Be brief.\n"), "agents/a.yml")

    request = build_request(document.config, {"prompt": "hi"})
    assert request.response_schema is None
    assert request.messages[0].content == "Be brief."


def test_a_collaborative_agent_may_have_an_output_schema_for_its_synthesis() -> None:
    document = parse_agent_document(agent_yaml(mode="collaborative", extra="output_schema: {type: object}\n"), "a.yml")

    assert document.config.response_schema == {"type": "object"}


def test_the_answer_tool_name_is_reserved() -> None:
    with pytest.raises(AgentFileError, match="reserved"):
        parse_agent_document(agent_yaml(extra="tools:\n  - name: final_answer\n"), "agents/a.yml")


def test_a_schema_file_beside_the_agent_is_read_when_the_directory_loads(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "count.yaml").write_text("type: object\nrequired: [n]\n")
    (tmp_path / "a.yml").write_text(agent_yaml(name="a", extra="output_schema: schemas/count.yaml\n"))

    loaded = load_agent_directory(tmp_path)

    assert loaded.broken == []
    [document] = loaded.documents
    assert document.config.output_schema == {"type": "object", "required": ["n"]}


def test_a_missing_or_invalid_schema_file_breaks_only_its_agent(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"type": 12}')
    (tmp_path / "a.yml").write_text(agent_yaml(name="a", extra="output_schema: missing.json\n"))
    (tmp_path / "b.yml").write_text(agent_yaml(name="b", extra="output_schema: bad.json\n"))
    (tmp_path / "c.yml").write_text(agent_yaml(name="c"))

    loaded = load_agent_directory(tmp_path)

    assert [document.config.name for document in loaded.documents] == ["c"]
    problems = {Path(issue.source).name: (issue.path, issue.message) for issue in loaded.issues}
    assert problems["a.yml"][0] == "output_schema"
    assert "cannot read schema file 'missing.json'" in problems["a.yml"][1]
    assert "not a valid JSON Schema" in problems["b.yml"][1]


def test_an_answer_is_parsed_fences_tolerated_and_problems_listed() -> None:
    assert check_answer('```json\n{"n": 3}\n```', SCHEMA).value == {"n": 3}
    assert check_answer("three", SCHEMA).problems[0].startswith("the answer is not JSON")
    many = {"type": "array", "items": {"type": "integer"}}
    checked = check_answer(json.dumps(["x"] * 10), many)
    assert len(checked.problems) == MAX_PROBLEMS + 1
    assert checked.problems[-1] == f"... and {10 - MAX_PROBLEMS} more"


def test_a_non_object_schema_is_wrapped_in_the_forced_answer_tool() -> None:
    listing = {"type": "array", "items": {"type": "string"}}

    assert answer_tool_schema(SCHEMA) == SCHEMA
    assert answer_tool_schema(listing)["properties"]["value"] == listing
    assert json.loads(answer_from_tool({"value": ["a"]}, listing)) == ["a"]


async def test_a_loop_stopped_at_max_tool_iterations_without_an_answer_is_output_invalid() -> None:
    text = agent_yaml(provider="scripted", extra=f"output_schema: {json.dumps(SCHEMA)}\nmax_tool_iterations: 1\n")
    config = parse_agent_document(text, "agents/a.yml").config
    provider = ScriptedProvider([{"text": "still looking", "tool_calls": [{"name": "lookup"}]}])

    with pytest.raises(OutputInvalidError) as raised:
        await run_agent(config, provider, {"prompt": "count"})

    assert raised.value.problems[0] == "the loop stopped at max_tool_iterations before an answer"
    assert len(provider.requests) == 2
