"""Structured output on every vendor, through its official SDK against its wire fake: the
vendor's own mechanism is on the wire (OpenAI `response_format` json_schema, Anthropic and
Bedrock a forced tool, Ollama `format`), an answer that does not follow the schema is sent
back with the problems found, and the parsed JSON is the answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentrunner.adapters.providers.offline import ScriptedProvider
from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import OutputInvalidError
from agentrunner.domain.llm import ANSWER_TOOL_NAME
from agentrunner.domain.steps import JournalStepKind
from agentrunner.ports.providers import LLMProvider
from agentrunner.ports.state import StateStore
from agentrunner.runtime.agent_run import run_agent
from agentrunner.runtime.journal import RunJournal
from tests.fakes.vendor import FakeVendor, Reply

# Vendors with no JSON response format of their own: the answer comes as the forced tool's input.
FORCED_TOOL = {"anthropic", "bedrock"}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


def _agent(fake: FakeVendor, **fields: object) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "name": "facts",
            "agent_type": "facts",
            "execution_mode": "autonomous",
            "system_prompt": "Answer with facts.",
            "llm_config": {"provider": fake.name, "model": fake.model, "max_attempts": 1},
            "output_schema": SCHEMA,
            **fields,
        }
    )


def _answer(fake: FakeVendor, value: Any) -> Reply:
    """The vendor's answer of `value`: text, or the forced answer tool's input."""
    if fake.name in FORCED_TOOL:
        return Reply(tool_call=(ANSWER_TOOL_NAME, value))
    return Reply(text=json.dumps(value))


def _assert_native_mechanism(fake: FakeVendor, body: dict[str, Any]) -> None:
    if fake.name == "openai":
        assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
    elif fake.name == "ollama":
        assert body["format"] == SCHEMA
    elif fake.name == "anthropic":
        assert body["tool_choice"] == {"type": "tool", "name": ANSWER_TOOL_NAME}
        [tool] = body["tools"]
        assert (tool["name"], tool["input_schema"]) == (ANSWER_TOOL_NAME, SCHEMA)
    else:
        assert body["toolConfig"]["toolChoice"] == {"tool": {"name": ANSWER_TOOL_NAME}}
        [tool] = body["toolConfig"]["tools"]
        assert tool["toolSpec"]["name"] == ANSWER_TOOL_NAME
        assert tool["toolSpec"]["inputSchema"] == {"json": SCHEMA}


async def test_the_native_mechanism_is_on_the_wire_and_the_parsed_json_is_the_answer(
    fake: FakeVendor, provider: LLMProvider
) -> None:
    fake.reply_in_turn(_answer(fake, {"city": "Paris", "population": 2102650}))

    completion = await run_agent(_agent(fake), provider, {"prompt": "Largest city of France?"})

    assert json.loads(completion.text) == {"city": "Paris", "population": 2102650}
    assert completion.tool_calls == []
    [received] = fake.received
    _assert_native_mechanism(fake, received.body)
    # The schema is the vendor's to enforce: no instructions in the prompt on top of it.
    assert received.system == "Answer with facts."


async def test_an_invalid_answer_is_sent_back_with_its_problems_then_the_valid_one_is_the_output(
    fake: FakeVendor, provider: LLMProvider
) -> None:
    fake.reply_in_turn(
        _answer(fake, {"city": "Paris", "population": "two million"}),
        _answer(fake, {"city": "Paris", "population": 2102650}),
    )

    completion = await run_agent(_agent(fake), provider, {"prompt": "Largest city of France?"}, retry_base_seconds=0)

    assert json.loads(completion.text) == {"city": "Paris", "population": 2102650}
    first, second = fake.received
    _assert_native_mechanism(fake, second.body)
    correction = second.messages[-1]
    assert correction["role"] == "user"
    assert "does not follow the required JSON schema" in correction["content"]
    assert "population: 'two million' is not of type 'integer'" in correction["content"]
    # The wrong answer is in the conversation the model reads again.
    assert json.loads(second.messages[-2]["content"]) == {"city": "Paris", "population": "two million"}
    assert len(second.messages) == len(first.messages) + 2
    # Usage adds up over both calls.
    assert completion.usage.input_tokens > 0


async def test_a_streamed_answer_is_checked_and_corrected_the_same_way(fake: FakeVendor, provider: LLMProvider) -> None:
    fake.reply_in_turn(
        _answer(fake, {"city": "Paris", "population": -1.5}),
        _answer(fake, {"city": "Paris", "population": 2102650}),
    )
    pieces: list[str] = []

    async def heard(text: str) -> None:
        pieces.append(text)

    completion = await run_agent(_agent(fake), provider, {"prompt": "Largest city of France?"}, on_text=heard)

    assert completion.output_json == {"city": "Paris", "population": 2102650}
    assert all(received.stream for received in fake.received)
    _assert_native_mechanism(fake, fake.received[0].body)
    assert "population: -1.5 is not of type 'integer'" in fake.received[1].messages[-1]["content"]


async def test_an_answer_still_invalid_after_output_retries_fails_with_output_invalid(
    fake: FakeVendor, provider: LLMProvider
) -> None:
    fake.reply_in_turn(*[_answer(fake, {"city": "Paris"})] * 3)

    with pytest.raises(OutputInvalidError) as raised:
        await run_agent(_agent(fake, output_retries=1), provider, {"prompt": "Largest city of France?"})

    assert raised.value.code == "output_invalid"
    assert raised.value.problems == ("(top): 'population' is a required property",)
    assert "output_retries 1" in raised.value.message
    assert len(fake.received) == 2  # the first answer and one correction


# -- a crash between an invalid answer and its correction --------------------------------


async def test_a_run_resumed_after_the_invalid_answer_replays_it_and_asks_only_the_correction(
    state_store: StateStore,
) -> None:
    config = AgentConfig.model_validate(
        {
            "name": "facts",
            "agent_type": "facts",
            "execution_mode": "autonomous",
            "llm_config": {"provider": "scripted", "model": "facts"},
            "output_schema": SCHEMA,
        }
    )
    task = {"prompt": "Largest city of France?"}
    crashed = ScriptedProvider(['{"city": "Paris"}', '{"city": "Paris", "population": 2102650}'])
    await run_agent(config, crashed, task, journal=RunJournal(state_store, "exec-so", model="facts"))
    [invalid, corrected] = await state_store.steps("exec-so")
    assert [invalid.kind, corrected.kind] == [JournalStepKind.MODEL, JournalStepKind.MODEL]

    # The worker died after the invalid answer was journaled: the next run has only it.
    resumed = ScriptedProvider(['{"city": "Paris", "population": 2102650}'])
    journal = RunJournal(state_store, "exec-so", model="facts", recorded=[invalid])
    completion = await run_agent(config, resumed, task, journal=journal)

    assert completion.output_json == {"city": "Paris", "population": 2102650}
    [asked] = resumed.requests  # the invalid answer replayed, only the correction asked
    assert asked.messages[-2].content == '{"city": "Paris"}'
    assert "'population' is a required property" in asked.messages[-1].content
    assert [step.replayed for step in journal.steps()] == [True, False]
