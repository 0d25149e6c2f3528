"""StateStore contract, agent versions (issue 24): each new content of an agent is that
agent's next version, with its masked text and the fields that changed; the same content
again is no new version; numbers are per agent; on every backend (SQLite, PostgreSQL,
either behind a cache)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.agent_version import FieldChange, loaded_content
from agentrunner.domain.errors import AgentVersionNotFoundError
from agentrunner.domain.event import new_id
from agentrunner.domain.execution import Execution
from agentrunner.domain.redaction import MASK
from agentrunner.ports.state import StateStore


def _config(name: str = "writer", **fields: Any) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "name": name,
            "agent_type": "t",
            "execution_mode": "autonomous",
            "llm_config": {"provider": "echo", "model": "echo"},
            "system_prompt": "Be brief.",
            **fields,
        }
    )


async def test_a_new_content_is_the_next_version_with_the_fields_that_changed(state_store: StateStore) -> None:
    [first] = await state_store.record_versions([loaded_content(_config())])
    [again] = await state_store.record_versions([loaded_content(_config())])
    [second] = await state_store.record_versions([loaded_content(_config(system_prompt="Be thorough."))])

    assert (first.version, first.changes) == (1, [])
    assert (again.version, again.content_hash) == (1, first.content_hash)  # the same content: no new version
    assert second.version == 2
    assert second.content_hash != first.content_hash
    assert second.changes == [FieldChange("system_prompt", "Be brief.", "Be thorough.")]
    assert "Be thorough." in second.text
    listed = await state_store.list_versions("writer")
    assert [(v.version, v.content_hash) for v in listed] == [(2, second.content_hash), (1, first.content_hash)]
    fetched = await state_store.get_version("writer", 1)
    assert (fetched.text, fetched.changes) == (first.text, [])
    # The whole config, never shown, is what a run pinned to this version parses again.
    assert AgentConfig.model_validate(fetched.config) == _config()


async def test_versions_are_numbered_per_agent(state_store: StateStore) -> None:
    await state_store.record_versions([loaded_content(_config("a")), loaded_content(_config("b"))])
    recorded = await state_store.record_versions(
        [loaded_content(_config("a", system_prompt="x")), loaded_content(_config("b"))]
    )

    assert [(v.agent, v.version) for v in recorded] == [("a", 2), ("b", 1)]
    assert [v.version for v in await state_store.list_versions("b")] == [1]
    assert await state_store.list_versions("nobody") == []


async def test_more_agents_than_one_statement_names_are_numbered_in_one_call(state_store: StateStore) -> None:
    """More agents than one statement names (500): each chunk's latest versions are found."""
    names = [f"agent-{n:04d}" for n in range(600)]
    await state_store.record_versions([loaded_content(_config(name)) for name in names])

    changed = set(names[::3])
    recorded = await state_store.record_versions(
        [loaded_content(_config(name, system_prompt="x") if name in changed else _config(name)) for name in names]
    )

    assert [(v.agent, v.version) for v in recorded] == [(n, 2 if n in changed else 1) for n in names]
    assert [v.version for v in await state_store.list_versions(names[-1])] == [1]
    assert [v.version for v in await state_store.list_versions(names[597])] == [2, 1]


async def test_a_version_an_agent_does_not_have_is_not_found(state_store: StateStore) -> None:
    await state_store.record_versions([loaded_content(_config("a"))])

    with pytest.raises(AgentVersionNotFoundError):
        await state_store.get_version("a", 2)
    with pytest.raises(AgentVersionNotFoundError):
        await state_store.get_version("b", 1)  # another agent's number is not this one's


async def test_a_version_keeps_no_secret_and_no_tool_definition(state_store: StateStore) -> None:
    tool = {"name": "search", "type": "mcp", "url": "https://user:pw@mcp.internal/sse?token=abc", "headers": {}}
    config = _config(tools=[tool], webhook_url="https://hooks.example.com/x?sig=s3cret")
    await state_store.record_versions([loaded_content(config)])
    moved = {**tool, "url": "https://mcp2.internal/sse"}
    [second] = await state_store.record_versions(
        [loaded_content(_config(tools=[moved], webhook_url="https://hooks.example.com/x?sig=s3cret"))]
    )

    for version in await state_store.list_versions("writer"):
        for secret in ("mcp.internal", "mcp2.internal", "s3cret", "pw@"):
            assert secret not in version.text
    # The tool's definition changed: which entry shows, not its values.
    assert [change.field for change in second.changes] == ["tools.search.definition_hash"]
    assert all("internal" not in repr(change) for change in second.changes)
    assert MASK in second.text


async def test_an_execution_keeps_its_agent_version_and_is_listed_by_it(state_store: StateStore) -> None:
    on_one = Execution(execution_id=new_id(), agent="writer", input={}, trace_id=new_id(), agent_version=1)
    on_two = Execution(execution_id=new_id(), agent="writer", input={}, trace_id=new_id(), agent_version=2)
    unknown = Execution(execution_id=new_id(), agent="writer", input={}, trace_id=new_id())
    for execution in (on_one, on_two, unknown):
        await state_store.create_execution(execution)

    assert (await state_store.get_execution(on_two.execution_id)).agent_version == 2
    assert (await state_store.get_execution(unknown.execution_id)).agent_version is None
    listed = await state_store.list_executions(agent="writer", agent_version=1)
    assert [e.execution_id for e in listed.items] == [on_one.execution_id]


async def test_replicas_recording_the_same_content_at_once_make_one_version(state_store: StateStore) -> None:
    contents = [loaded_content(_config("writer", system_prompt=f"edit {n}")) for n in range(3)]
    for content in contents:
        recorded = await asyncio.gather(*(state_store.record_versions([content]) for _ in range(4)))
        assert len({version.version for [version] in recorded}) == 1  # every replica found the same number

    assert [v.version for v in await state_store.list_versions("writer")] == [3, 2, 1]
