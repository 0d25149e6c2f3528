"""AgentRegistry: which agents can run on this node, and a reason a user can act on for the
ones that cannot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentrunner.adapters.config.files import load_agent_directory
from agentrunner.adapters.providers.catalog import SettingsProviderCatalog
from agentrunner.domain.agent import ExecutionMode
from agentrunner.domain.agent_document import AgentDocument, parse_agent_document
from agentrunner.domain.errors import AgentNotFoundError, AgentUnavailableError
from agentrunner.domain.reason import Reason, short_reason
from agentrunner.runtime.registry import AgentRegistry, AgentStatus
from agentrunner.settings import Settings
from tests.conftest import FIXTURE_AGENTS


def agent_yaml(name: str, *, provider: str = "echo", mode: str = "autonomous") -> str:
    """A small valid agent file; scheduled agents get an hourly interval."""
    schedule = "schedule_config:\n  type: interval\n  interval_seconds: 3600\n" if mode == "scheduled" else ""
    return (
        f"name: {name}\nagent_type: tester\nexecution_mode: {mode}\n"
        f"llm_config:\n  provider: {provider}\n  model: some-model\n{schedule}"
    )


def document(name: str, *, provider: str = "echo", mode: str = "autonomous") -> AgentDocument:
    return parse_agent_document(agent_yaml(name, provider=provider, mode=mode), f"agents/{name}.yml")


# Any: Settings validates each value, as it does the environment's strings.
def catalog(**settings: Any) -> SettingsProviderCatalog:
    return SettingsProviderCatalog(Settings(_env_file=None, **settings))


def registry_of(*documents: AgentDocument, **settings: str) -> AgentRegistry:
    registry = AgentRegistry()
    registry.replace_all(list(documents), [], catalog(**settings))
    return registry


@pytest.fixture(autouse=True)
def _no_keys_from_the_environment(clean_env: None) -> None:
    """Every test starts with no provider key, whatever the developer's shell exports."""


@pytest.mark.parametrize(
    ("provider", "reason"),
    [
        ("openai", "provider 'openai' needs OPENAI_API_KEY: set it in .env or the environment"),
        ("anthropic", "provider 'anthropic' needs ANTHROPIC_API_KEY: set it in .env or the environment"),
        (
            "bedrock",
            "provider 'bedrock' needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: set them in .env or the environment",
        ),
    ],
)
def test_agent_on_a_keyed_provider_without_its_key_is_unavailable_naming_the_variable(
    provider: str, reason: str
) -> None:
    registry = registry_of(document("needs-key", provider=provider))

    agent = registry.get("needs-key")

    assert (agent.status, agent.reasons) == (AgentStatus.UNAVAILABLE, (reason,))


@pytest.mark.parametrize(
    ("provider", "keys"),
    [
        ("anthropic", {"anthropic_api_key": "sk-ant-test"}),
        ("bedrock", {"aws_access_key_id": "AKIATEST", "aws_secret_access_key": "secret"}),
        ("ollama", {}),
    ],
)
def test_every_provider_is_available_once_its_credentials_are_set(provider: str, keys: dict[str, str]) -> None:
    registry = registry_of(document("agent", provider=provider), **keys)

    assert registry.get("agent").status is AgentStatus.AVAILABLE


@pytest.mark.parametrize("mode", ["autonomous", "scheduled"])
def test_echo_agent_is_available_without_any_key(mode: str) -> None:
    registry = registry_of(document("echo-agent", mode=mode))

    agent = registry.get("echo-agent")

    assert (agent.status, agent.reasons) == (AgentStatus.AVAILABLE, ())
    assert registry.runnable("echo-agent").name == "echo-agent"


def test_openai_autonomous_agent_is_available_once_openai_api_key_is_set() -> None:
    registry = registry_of(document("writer", provider="openai"), openai_api_key="sk-test")

    assert registry.get("writer").status is AgentStatus.AVAILABLE
    assert registry.runnable("writer").llm_config.provider.value == "openai"


def test_collaborative_agents_are_served() -> None:
    assert registry_of(document("team", mode="collaborative")).get("team").status is AgentStatus.AVAILABLE


def test_continuous_agents_are_served() -> None:
    assert registry_of(document("chat", mode="continuous")).get("chat").status is AgentStatus.AVAILABLE


def test_a_collaborative_agent_without_its_provider_key_is_unavailable_saying_why() -> None:
    registry = registry_of(document("blocked", provider="openai", mode="collaborative"))

    assert registry.get("blocked").reasons == (
        "provider 'openai' needs OPENAI_API_KEY: set it in .env or the environment",
    )


def test_broken_file_with_a_readable_name_is_listed_unavailable_with_its_error(tmp_path: Path) -> None:
    bad = tmp_path / "half-done.yml"
    bad.write_text(agent_yaml("half-done", mode="batch"), encoding="utf-8")
    loaded = load_agent_directory(tmp_path)
    registry = AgentRegistry()

    registry.replace_all(loaded.documents, loaded.broken, catalog())

    agent = registry.get("half-done")
    assert (agent.status, agent.config, agent.source) == (AgentStatus.UNAVAILABLE, None, str(bad))
    assert agent.reasons == (
        f"{bad}:3: execution_mode: got 'batch', expected one of "
        "'collaborative', 'autonomous', 'continuous' or 'scheduled'",
    )
    assert [issue.path for issue in registry.problems] == ["execution_mode"]


def test_broken_file_without_a_name_is_only_a_problem_not_an_agent(tmp_path: Path) -> None:
    (tmp_path / "garbage.yml").write_text("- just\n- a list\n", encoding="utf-8")
    loaded = load_agent_directory(tmp_path)
    registry = AgentRegistry()

    registry.replace_all(loaded.documents, loaded.broken, catalog())

    assert registry.agents == {}
    assert [issue.message for issue in registry.problems] == [
        "expected a mapping of agent fields at the top level, found list"
    ]


def test_broken_file_claiming_the_name_of_a_loaded_agent_does_not_replace_it(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(agent_yaml("twin"), encoding="utf-8")
    (tmp_path / "b.yml").write_text(agent_yaml("twin", mode="batch"), encoding="utf-8")
    loaded = load_agent_directory(tmp_path)
    registry = AgentRegistry()

    registry.replace_all(loaded.documents, loaded.broken, catalog())

    assert registry.get("twin").status is AgentStatus.AVAILABLE
    assert registry.get("twin").source == str(tmp_path / "a.yml")
    assert [issue.source for issue in registry.problems] == [str(tmp_path / "b.yml")]


def test_unknown_agent_raises_not_found_pointing_at_get_agents() -> None:
    registry = registry_of(document("one"), document("two"))

    with pytest.raises(AgentNotFoundError) as caught:
        registry.get("nope")

    assert str(caught.value) == "agent 'nope' not found: GET /agents lists the 2 known agents"
    assert caught.value.code == "agent_not_found"
    assert caught.value.context == {"agent": "nope"}


def test_runnable_on_an_unavailable_agent_raises_with_the_reason() -> None:
    registry = registry_of(document("needs-key", provider="openai"))

    with pytest.raises(AgentUnavailableError) as caught:
        registry.runnable("needs-key")

    reason = "provider 'openai' needs OPENAI_API_KEY: set it in .env or the environment"
    assert str(caught.value) == f"agent 'needs-key' is unavailable: {reason}"
    assert caught.value.code == "agent_unavailable"
    assert caught.value.context == {"agent": "needs-key", "reasons": [reason]}


def test_runnable_on_an_unknown_agent_raises_not_found() -> None:
    with pytest.raises(AgentNotFoundError):
        registry_of().runnable("nope")


def test_replace_all_forgets_agents_that_are_gone_and_lists_the_rest_by_name() -> None:
    registry = registry_of(document("zulu"), document("alpha"), document("old"))

    registry.replace_all([document("zulu"), document("alpha")], [], catalog())

    assert list(registry.agents) == ["alpha", "zulu"]
    with pytest.raises(AgentNotFoundError):
        registry.get("old")


def test_in_modes_returns_only_available_agents_of_those_modes() -> None:
    registry = registry_of(
        document("runs-now"),
        document("ticks", mode="scheduled"),
        document("no-key", provider="anthropic"),
        document("later", mode="collaborative"),
    )

    assert [c.name for c in registry.in_modes(frozenset({ExecutionMode.AUTONOMOUS}))] == ["runs-now"]
    assert [c.name for c in registry.in_modes(frozenset({ExecutionMode.SCHEDULED}))] == ["ticks"]
    assert [c.name for c in registry.in_modes(frozenset({ExecutionMode.COLLABORATIVE}))] == ["later"]


def test_fixture_agents_without_keys_only_the_served_echo_agents_are_available() -> None:
    loaded = load_agent_directory(FIXTURE_AGENTS)
    registry = AgentRegistry()

    registry.replace_all(loaded.documents, loaded.broken, catalog())

    status = {name: agent.status.value for name, agent in registry.agents.items()}
    assert status == {
        "anthropic-analyst": "unavailable",
        "bedrock-reporter": "unavailable",
        "echo-helper": "available",
        "echo-planner": "available",
        "echo-ticker": "available",
        "openai-writer": "unavailable",
    }
    assert "AWS_ACCESS_KEY_ID" in registry.get("bedrock-reporter").reasons[0]


def test_an_agent_missing_tools_runs_degraded_and_an_unavailable_one_stays_unavailable() -> None:
    registry = registry_of(document("helper"), document("keyless", provider="openai"))

    registry.apply_tools(
        {"helper": ["current_time"]},
        {"helper": ["tool 'kb': MCP server down"], "keyless": ["tool 'kb': MCP server down"]},
    )

    helper, keyless = registry.get("helper"), registry.get("keyless")
    assert (helper.status, helper.reasons, helper.tools) == (
        AgentStatus.DEGRADED,
        ("tool 'kb': MCP server down",),
        ("current_time",),
    )
    assert registry.runnable("helper").name == "helper"
    assert [config.name for config in registry.in_modes(frozenset({ExecutionMode.AUTONOMOUS}))] == ["helper"]
    assert keyless.status is AgentStatus.UNAVAILABLE
    assert keyless.reasons[-1] == "tool 'kb': MCP server down"
    with pytest.raises(AgentUnavailableError):
        registry.runnable("keyless")


@pytest.mark.parametrize(
    ("provider", "short"),
    [
        ("openai", "OPENAI_API_KEY not set"),
        ("anthropic", "ANTHROPIC_API_KEY not set"),
        ("bedrock", "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY not set"),
    ],
)
def test_an_agent_waiting_for_a_key_says_which_in_one_short_line(provider: str, short: str) -> None:
    agent = registry_of(document("needs-key", provider=provider)).get("needs-key")

    assert agent.short_reason == short
    assert agent.reasons[0] != short  # the whole story stays in `reasons`


def test_an_agent_without_a_reason_has_no_short_reason() -> None:
    assert registry_of(document("fine")).get("fine").short_reason is None


def test_a_short_reason_is_one_line_of_80_characters_at_most_and_counts_the_others() -> None:
    registry = registry_of(document("helper"), document("keyless", provider="openai"))
    long = Reason("tool 'kb': MCP server unreachable (ConnectError ...)", short="MCP server 'kb' unreachable")
    registry.apply_tools({}, {"helper": [long, "x" * 200 + "\nsecond line"], "keyless": ["first\nsecond"]})

    helper, keyless = registry.get("helper"), registry.get("keyless")
    assert helper.short_reason == "MCP server 'kb' unreachable (+1 more)"
    assert keyless.short_reason == "OPENAI_API_KEY not set (+1 more)"
    assert short_reason("x" * 200 + "\nsecond line") == "x" * 79 + "…"
    assert short_reason("first\nsecond") == "first"


def test_a_broken_file_says_in_one_line_what_is_wrong_and_where_in_full(tmp_path: Path) -> None:
    (tmp_path / "broken.yml").write_text("name: broken\nagent_type: t\nexecution_mode: sometimes\n")
    loaded = load_agent_directory(tmp_path)
    registry = AgentRegistry()

    registry.replace_all(loaded.documents, loaded.broken, catalog())

    broken = registry.get("broken")
    assert broken.short_reason is not None
    assert broken.short_reason.startswith("invalid file: ")
    assert "execution_mode" in broken.short_reason
    assert len(broken.short_reason) <= 80
    assert str(tmp_path / "broken.yml") in broken.reasons[0]
