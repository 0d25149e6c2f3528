"""An agent as an MCP tool (domain/exposed.py): its input schema (its `input_schema`, else a
`prompt` string, plus `session_id` for a continuous agent), the task_data a call's
arguments become, its output schema (an object's output_schema only), and `input_schema`
in an agent file: checked when the file loads, and against every invocation's task_data."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.agent_document import AgentFileError, parse_agent_document
from agentrunner.domain.errors import InputInvalidError
from agentrunner.domain.exposed import (
    PROMPT_SCHEMA,
    arguments_problems,
    check_input,
    task_of,
    tool_input_schema,
    tool_output_schema,
)
from tests.unit.test_agent_document import agent_yaml

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
}


def config(mode: str = "autonomous", **fields: Any) -> AgentConfig:
    extra = "".join(f"{key}: {json.dumps(value)}\n" for key, value in fields.items())
    return parse_agent_document(agent_yaml(mode=mode, extra=extra), "agents/a.yml").config


def test_an_agent_without_input_schema_takes_a_prompt_as_the_cli_sends_it() -> None:
    agent = config()

    assert tool_input_schema(agent) == PROMPT_SCHEMA
    assert task_of(agent, {"prompt": "hi"}) == ({"prompt": "hi"}, None)
    assert arguments_problems(agent, {"prompt": "hi"}) == ()
    assert arguments_problems(agent, {"question": "hi"}) == ("(top): 'prompt' is a required property",)
    assert arguments_problems(agent, {"prompt": 3}) == ("prompt: 3 is not of type 'string'",)
    check_input(agent, {"anything": ["goes"]})  # REST takes any task_data without an input_schema


def test_an_input_schema_is_the_tool_schema_and_the_check_of_every_invocation() -> None:
    agent = config(input_schema=CITY)

    assert tool_input_schema(agent) == CITY
    assert task_of(agent, {"city": "Lyon", "days": 2}) == ({"city": "Lyon", "days": 2}, None)
    check_input(agent, {"city": "Lyon"})
    with pytest.raises(InputInvalidError) as caught:
        check_input(agent, {"days": 0})
    assert caught.value.code == "input_invalid"
    assert caught.value.message == (
        "task_data does not follow the input_schema of agent 'probe': "
        "(top): 'city' is a required property; days: 0 is less than the minimum of 1"
    )


def test_the_tool_schema_is_a_copy_the_caller_may_change() -> None:
    agent = config(input_schema=CITY)

    tool_input_schema(agent)["properties"]["city"]["type"] = "integer"

    assert agent.input_schema == CITY


def test_a_continuous_agent_takes_a_session_id_that_is_not_task_data() -> None:
    agent = config(mode="continuous")

    schema = tool_input_schema(agent)
    assert schema["required"] == ["prompt"]
    assert schema["properties"]["session_id"]["type"] == "string"
    assert task_of(agent, {"prompt": "again", "session_id": "s-1"}) == ({"prompt": "again"}, "s-1")
    assert task_of(agent, {"prompt": "new"}) == ({"prompt": "new"}, None)
    assert arguments_problems(agent, {"prompt": "x", "session_id": "s" * 300})[0].startswith("session_id: ")
    assert PROMPT_SCHEMA["properties"] == {"prompt": PROMPT_SCHEMA["properties"]["prompt"]}  # not changed


def test_a_continuous_agent_whose_input_has_a_session_id_field_keeps_it_as_task_data() -> None:
    own = {"type": "object", "properties": {"session_id": {"type": "string"}}}
    agent = config(mode="continuous", input_schema=own)

    assert tool_input_schema(agent) == own
    assert task_of(agent, {"session_id": "mine"}) == ({"session_id": "mine"}, None)


def test_the_output_schema_of_the_tool_is_an_objects_output_schema_only() -> None:
    answer = {"type": "object", "properties": {"answer": {"type": "string"}}}

    assert tool_output_schema(config(output_schema=answer)) == answer
    assert tool_output_schema(config(output_schema={"type": "array"})) is None
    assert tool_output_schema(config()) is None


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "objet"}, "not a valid JSON Schema"),
        ({"type": "string"}, 'input_schema needs "type": "object"'),
        ({"properties": {"a": {}}}, 'input_schema needs "type": "object"'),
    ],
)
def test_an_input_schema_that_cannot_check_task_data_is_refused_when_the_file_loads(
    schema: dict[str, Any], problem: str
) -> None:
    with pytest.raises(AgentFileError) as caught:
        parse_agent_document(agent_yaml(extra=f"input_schema: {json.dumps(schema)}\n"), "agents/a.yml")

    [issue] = caught.value.issues
    assert (issue.source, issue.path, issue.line) == ("agents/a.yml", "input_schema", 7)
    assert problem in issue.message
