"""The tool catalog against real tool sources: MCP servers over stdio, SSE and streamable
HTTP (with auth headers from `${VAR}`), a tool package installed with pip and found by its
entry point, the built-in tools on a real store and bus, and the compat agent files; and
whether each tool's calls may be repeated after a crash: from a server's annotations
(every combination), a hostile server's malformed or lying ones, and the entry's override."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentrunner.adapters.bus.memory import InMemoryEventBus
from agentrunner.adapters.config.files import load_agent_directory
from agentrunner.adapters.providers.catalog import SettingsProviderCatalog
from agentrunner.adapters.providers.offline import ScriptedProvider
from agentrunner.adapters.state.sql import SQLStateStore
from agentrunner.adapters.tools.catalog import ToolShelf
from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.event import Event
from agentrunner.ports.tools import Repeatable, Tool, ToolContext
from agentrunner.runtime.agent_run import run_agent
from agentrunner.runtime.registry import AgentRegistry, AgentStatus
from agentrunner.settings import Settings
from tests.conftest import COMPAT_AGENTS, REPO
from tests.mcp_server import HINTS, McpHttpServer

CONTEXT = ToolContext(agent="smith", execution_id="e1", session_id="s1", trace_id="t1")


def agent(*tools: dict[str, Any]) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "name": "smith",
            "agent_type": "t",
            "execution_mode": "autonomous",
            "llm_config": {"provider": "scripted", "model": "s"},
            "tools": list(tools),
        }
    )


@pytest.fixture
async def shelf(sqlite_url: str) -> AsyncIterator[ToolShelf]:
    store = SQLStateStore(sqlite_url)
    await store.start()
    bus = InMemoryEventBus()
    await bus.start()
    catalog = ToolShelf(store=store, bus=bus, connect_timeout_seconds=10)
    yield catalog
    await catalog.close()
    await bus.close()
    await store.close()


def by_name(shelf: ToolShelf, agent_name: str = "smith") -> dict[str, Tool]:
    return {tool.definition.name: tool for tool in shelf.tools_for(agent_name)}


async def test_a_stdio_server_is_started_listed_and_called_with_its_environment(
    shelf: ToolShelf, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STDIO_SECRET", "from-the-env")
    entry = {
        "name": "local",
        "type": "mcp",
        "command": sys.executable,
        "args": ["-m", "tests.mcp_server"],
        "env": {"PYTHONPATH": str(REPO), "SERVER_SECRET": "${STDIO_SECRET}"},
    }

    missing = await shelf.load([agent(entry)])
    tools = by_name(shelf)

    assert missing == {}
    assert {"local__add", "local__slow", "local__fail", "local__env"} <= set(tools)
    assert tools["local__add"].definition.parameters["required"] == ["a", "b"]
    assert await tools["local__add"].call({"a": 1, "b": 2}, CONTEXT) == "3.0"
    assert await tools["local__env"].call({"name": "SERVER_SECRET"}, CONTEXT) == "from-the-env"


@pytest.fixture
def sse_server() -> Iterator[McpHttpServer]:
    with McpHttpServer(transport="sse") as server:
        yield server


async def test_an_sse_server_of_the_older_protocol_is_called(sse_server: McpHttpServer, shelf: ToolShelf) -> None:
    assert sse_server.url.endswith("/sse")

    missing = await shelf.load([agent({"name": "old", "type": "mcp", "url": sse_server.url})])

    assert missing == {}
    assert await by_name(shelf)["old__add"].call({"a": 2, "b": 2}, CONTEXT) == "4.0"


@pytest.fixture
def http_server() -> Iterator[McpHttpServer]:
    with McpHttpServer() as server:
        yield server


async def test_auth_headers_come_from_the_environment_and_are_never_stored(
    http_server: McpHttpServer, shelf: ToolShelf, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KIT_TOKEN", "s3cret-value")
    entry = {"name": "kit", "type": "mcp", "url": http_server.url, "headers": {"Authorization": "Bearer ${KIT_TOKEN}"}}
    config = agent(entry)

    await shelf.load([config])

    assert await by_name(shelf)["kit__whoami"].call({}, CONTEXT) == "Bearer s3cret-value"
    assert "s3cret-value" not in config.model_dump_json()


async def test_a_header_naming_an_unset_variable_degrades_the_agent_saying_which(
    http_server: McpHttpServer, shelf: ToolShelf, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KIT_TOKEN", raising=False)
    entry = {"name": "kit", "type": "mcp", "url": http_server.url, "headers": {"Authorization": "Bearer ${KIT_TOKEN}"}}

    missing = await shelf.load([agent(entry)])

    [reason] = missing["smith"]
    assert "${KIT_TOKEN}, which is not set" in reason
    assert shelf.tools_for("smith") == []


async def test_sessions_are_kept_across_loads_and_closed_when_the_entry_goes(
    http_server: McpHttpServer, shelf: ToolShelf
) -> None:
    config = agent({"name": "kit", "type": "mcp", "url": http_server.url})
    await shelf.load([config])
    first = by_name(shelf)["kit__add"]

    await shelf.load([config])
    kept = by_name(shelf)["kit__add"]
    await shelf.load([agent()])

    assert kept._server is first._server  # type: ignore[attr-defined]
    assert not first._server.connected  # type: ignore[attr-defined]
    assert shelf.tools_for("smith") == []


@pytest.fixture(scope="module")
def tool_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package in tests/fixtures/tool_package, installed with pip into a directory of
    its own (put on sys.path by the test), as a team would ship a tool."""
    target = tmp_path_factory.mktemp("site")
    source = REPO / "tests" / "fixtures" / "tool_package"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
        timeout=110,
    )
    return target


@pytest.mark.timeout(180)
async def test_a_tool_from_an_installed_package_is_found_by_its_entry_point_and_called(
    shelf: ToolShelf, tool_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = agent({"name": "word_count", "description": "Count words."})
    assert await shelf.load([config]) != {}  # not installed yet: degraded, saying so

    monkeypatch.syspath_prepend(str(tool_package))
    missing = await shelf.load([config])
    provider = ScriptedProvider(
        lambda request: (
            {"tool_calls": [{"name": "word_count", "arguments": {"text": "one two three"}}]}
            if not any(m.role == "tool" for m in request.messages)
            else next(m.content for m in request.messages if m.role == "tool")
        )
    )
    answer = await run_agent(config, provider, {"prompt": "count"}, tools=shelf.tools_for("smith"), context=CONTEXT)

    assert missing == {}
    assert by_name(shelf)["word_count"].definition.description == "Count words."
    assert answer.text == "3 words (for smith)"


async def test_builtin_state_tools_keep_the_sessions_memory(shelf: ToolShelf) -> None:
    await shelf.load([agent({"name": "set_state"}, {"name": "get_state"})])
    tools = by_name(shelf)

    await tools["set_state"].call({"key": "city", "value": {"name": "Paris"}}, CONTEXT)
    found = json.loads(await tools["get_state"].call({"key": "city"}, CONTEXT))
    other = json.loads(await tools["get_state"].call({}, ToolContext("smith", "e2", "s2", "t")))

    assert found == {"key": "city", "value": {"name": "Paris"}, "found": True}
    assert other == {}


async def test_builtin_publish_event_reaches_subscribers_and_refuses_platform_topics(shelf: ToolShelf) -> None:
    await shelf.load([agent({"name": "publish_event"})])
    received: list[Event] = []

    async def handler(event: Event) -> None:
        received.append(event)

    subscription = await shelf._bus.subscribe("watch", ["report.#"], handler)
    publish = by_name(shelf)["publish_event"]
    await publish.call({"topic": "report.ready", "payload": {"n": 1}}, CONTEXT)
    with pytest.raises(PermissionError):
        await publish.call({"topic": "invoke.someone"}, CONTEXT)
    for _ in range(100):
        if received:
            break
        await asyncio.sleep(0.02)
    await subscription.cancel()

    [event] = received
    assert (event.topic, event.payload, event.trace_id) == ("report.ready", {"n": 1, "source_agent": "smith"}, "t1")


async def test_builtin_http_request_calls_allowed_hosts_only(http_server: McpHttpServer, shelf: ToolShelf) -> None:
    # The test server is on loopback: the entry opens that network on purpose.
    entry = {"name": "http_request", "allowed_hosts": ["127.0.0.1"], "allowed_networks": ["127.0.0.0/8"]}
    await shelf.load([agent(entry)])
    request = by_name(shelf)["http_request"]

    answer = json.loads(await request.call({"url": http_server.url.replace("/mcp", "/nowhere")}, CONTEXT))
    with pytest.raises(PermissionError, match="not allowed"):
        await request.call({"url": "http://localhost:1/"}, CONTEXT)

    assert answer["status"] == 404


@pytest.mark.skipif(not COMPAT_AGENTS.is_dir(), reason=f"compat agent files not found at {COMPAT_AGENTS}")
async def test_compat_agents_load_with_their_mcp_tools_and_unreachable_hosts_degrade_them(shelf: ToolShelf) -> None:
    directory = await asyncio.to_thread(load_agent_directory, COMPAT_AGENTS)
    settings = Settings(_env_file=None, openai_api_key="sk-x", anthropic_api_key="sk-y")
    registry = AgentRegistry()
    registry.replace_all(list(directory.documents), [], SettingsProviderCatalog(settings))
    configs = [document.config for document in directory.documents]

    missing = await shelf.load(configs)
    registry.apply_tools({}, missing)

    assert directory.issues == []
    for config in configs:
        agent_entry = registry.get(config.name)
        mcp_entries = [tool for tool in config.tools if tool.type == "mcp"]
        assert mcp_entries, config.name
        assert agent_entry.status is AgentStatus.DEGRADED, (config.name, agent_entry.reasons)
        for tool in mcp_entries:
            assert any(f"tool {tool.name!r}: MCP server {tool.url} unreachable" in r for r in agent_entry.reasons)


async def test_http_request_refuses_non_http_urls(shelf: ToolShelf) -> None:
    await shelf.load([agent({"name": "http_request", "allowed_hosts": ["*.example.com"]})])

    with pytest.raises(ValueError, match="not an http"):
        await by_name(shelf)["http_request"].call({"url": "file:///etc/passwd"}, CONTEXT)


async def test_mcp_tools_are_repeatable_as_their_servers_annotations_say(
    http_server: McpHttpServer, shelf: ToolShelf
) -> None:
    await shelf.load([agent({"name": "kit", "type": "mcp", "url": http_server.url})])
    tools = by_name(shelf)

    said = {case: tools[f"kit__hint_{case}"].repeatable for case in HINTS}
    asked = {case: tools[f"kit__hint_{case}"].repeatable_call({}) for case in HINTS}

    expected = {case: Repeatable.ALWAYS if safe else Repeatable.NEVER for case, (_, safe) in HINTS.items()}
    assert said == expected
    assert asked == {case: safe for case, (_, safe) in HINTS.items()}
    assert tools["kit__add"].repeatable is Repeatable.NEVER  # no annotations: never repeated
    assert await tools["kit__hint_read_only"].call({}, CONTEXT) == "done"


async def test_an_entry_saying_idempotent_overrides_every_tool_of_its_server(
    http_server: McpHttpServer, shelf: ToolShelf
) -> None:
    await shelf.load(
        [
            agent(
                {"name": "careful", "type": "mcp", "url": http_server.url, "idempotent": False},
                {"name": "trusting", "type": "mcp", "url": http_server.url, "idempotent": True},
            )
        ]
    )
    tools = by_name(shelf)

    careful = {tools[f"careful__hint_{case}"].repeatable for case in HINTS}
    trusting = {tools[f"trusting__hint_{case}"].repeatable for case in HINTS}

    assert careful == {Repeatable.NEVER}
    assert trusting == {Repeatable.ALWAYS}
    assert not tools["careful__hint_read_only"].repeatable_call({})
    assert tools["trusting__add"].repeatable_call({"a": 1, "b": 2})
    assert await tools["careful__add"].call({"a": 1, "b": 2}, CONTEXT) == "3.0"


def hostile(**extra: Any) -> dict[str, Any]:
    """A tool entry for the hostile stdio server of tests/hostile_mcp_server.py."""
    return {
        "name": "shady",
        "type": "mcp",
        "command": sys.executable,
        "args": ["-m", "tests.hostile_mcp_server"],
        "env": {"PYTHONPATH": str(REPO)},
        **extra,
    }


async def test_malformed_annotations_leave_a_servers_tools_listed_and_never_repeatable(shelf: ToolShelf) -> None:
    missing = await shelf.load([agent(hostile())])
    tools = by_name(shelf)

    assert missing == {}
    # Wrong types ("true", 1), nested values, megabytes, a string for the object: the SDK
    # would read "true" as true, or refuse the whole list; each is dropped instead.
    for name in ("wrong_types", "nested", "oversized", "not_an_object"):
        assert tools[f"shady__{name}"].repeatable is Repeatable.NEVER, name
        assert not tools[f"shady__{name}"].repeatable_call({}), name
    assert await tools["shady__oversized"].call({}, CONTEXT) == "done"
    # A well-formed claim is the server's word, taken when the file says nothing.
    assert tools["shady__claims_read_only"].repeatable is Repeatable.ALWAYS


async def test_a_server_claiming_read_only_cannot_make_a_tool_the_file_declares_not_idempotent_repeatable(
    shelf: ToolShelf,
) -> None:
    config = agent(hostile(idempotent=False))

    await shelf.load([config])
    await shelf.load([config])  # a reload keeps the session: the file still wins
    liar = by_name(shelf)["shady__claims_read_only"]

    assert liar.repeatable is Repeatable.NEVER
    assert not liar.repeatable_call({})
    assert await liar.call({}, CONTEXT) == "done"


async def test_builtin_tools_say_which_calls_may_be_repeated_and_the_entry_overrides_them(shelf: ToolShelf) -> None:
    await shelf.load(
        [
            agent(
                {"name": "current_time"},
                {"name": "get_state", "idempotent": False},
                {"name": "set_state"},
                {"name": "publish_event", "idempotent": True},
                {"name": "http_request", "allowed_hosts": ["example.com"], "allowed_methods": ["GET", "POST"]},
            )
        ]
    )
    tools = by_name(shelf)

    assert {name: tool.repeatable for name, tool in tools.items()} == {
        "current_time": Repeatable.ALWAYS,
        "get_state": Repeatable.NEVER,
        "set_state": Repeatable.NEVER,
        "publish_event": Repeatable.ALWAYS,
        "http_request": Repeatable.PER_CALL,
    }
    assert tools["http_request"].repeatable_call({"url": "https://example.com/", "method": "GET"})
    assert not tools["http_request"].repeatable_call({"url": "https://example.com/", "method": "POST"})
