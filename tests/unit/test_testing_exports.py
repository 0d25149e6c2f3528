"""`agentrunner.testing` exports what the README promises users who test their own agents,
and the README names all it exports."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import agentrunner.testing
from agentrunner.domain.llm import LLMRequest, Message

README = Path(__file__).resolve().parents[2] / "README.md"


def _mentions() -> list[str]:
    """The README's paragraphs (or table rows) that speak of `agentrunner.testing`."""
    found: list[str] = []
    for block in README.read_text(encoding="utf-8").split("\n\n"):
        parts = block.splitlines() if block.lstrip().startswith("|") else [block]
        found.extend(part for part in parts if "`agentrunner.testing`" in part)
    return found


def _code_spans() -> set[str]:
    return {span for text in _mentions() for span in re.findall(r"`([^`]+)`", text)} - {"agentrunner.testing"}


def _promised_names() -> set[str]:
    return {span for span in _code_spans() if re.fullmatch(r"[A-Z]\w*", span)}


def test_the_readme_speaks_of_agentrunner_testing() -> None:
    assert len(_mentions()) >= 2
    assert {"ScriptedProvider", "InMemoryEventBus"} <= _promised_names()


def test_every_name_the_readme_promises_is_exported() -> None:
    for name in _promised_names():
        assert name in agentrunner.testing.__all__, f"README promises agentrunner.testing.{name}"
        assert hasattr(agentrunner.testing, name)


def test_the_readme_names_everything_agentrunner_testing_exports() -> None:
    assert set(agentrunner.testing.__all__) == _promised_names()


def test_the_providers_the_readme_names_are_exported() -> None:
    providers = {span for span in _code_spans() if re.fullmatch(r"[a-z]+", span)}
    exported = {getattr(getattr(agentrunner.testing, name), "name", None) for name in agentrunner.testing.__all__}

    assert providers
    assert providers <= exported


def test_the_calls_the_readme_shows_take_the_arguments_it_gives() -> None:
    calls = [re.fullmatch(r"(agentrunner(?:\.\w+)+)\((.*)\)", span) for span in _code_spans()]
    shown = [call for call in calls if call]
    assert shown
    for call in shown:
        module_name, _, attribute = call.group(1).rpartition(".")
        target = getattr(importlib.import_module(module_name), attribute)
        parameters = inspect.signature(target).parameters
        for keyword in re.findall(r"(\w+)=", call.group(2)):
            assert keyword in parameters, f"{call.group(1)} takes no {keyword}="


async def test_the_scripted_provider_answers_from_a_list_or_a_function() -> None:
    request = LLMRequest(model="any", messages=[Message(role="user", content="hi")])
    from_list = agentrunner.testing.ScriptedProvider(["first", "second"])
    from_function = agentrunner.testing.ScriptedProvider(lambda request: f"you said {request.messages[-1].content}")

    assert [(await from_list.complete(request)).text for _ in range(3)] == ["first", "second", "second"]
    assert (await from_function.complete(request)).text == "you said hi"
