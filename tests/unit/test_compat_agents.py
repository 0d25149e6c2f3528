"""Agent files written for other implementations load unchanged; the agents shipped in
config/agents/ (none calls a tool server) and examples/agents/ all load and together
cover every mode and provider.

The compat files live outside the repository (../shared/compat/agents, read-only): they
are read in place, never copied. A clone without ../shared skips those tests.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agentrunner.adapters.config.files import AgentDirectory, load_agent_directory
from agentrunner.domain.agent import AgentConfig, ExecutionMode, ProviderName
from agentrunner.domain.agent_document import parse_agent_document
from tests.conftest import COMPAT_AGENTS, REPO

SHIPPED_AGENTS = REPO / "config" / "agents"
EXAMPLE_AGENTS = REPO / "examples" / "agents"

needs_compat = pytest.mark.skipif(
    not COMPAT_AGENTS.is_dir(),
    reason=f"compat agent files not found at {COMPAT_AGENTS} (a clone without ../shared/compat)",
)
COMPAT_FILES = sorted(COMPAT_AGENTS.glob("*.y*ml")) if COMPAT_AGENTS.is_dir() else []


def by_name(loaded: AgentDirectory) -> dict[str, AgentConfig]:
    return {document.config.name: document.config for document in loaded.documents}


@pytest.fixture(scope="module")
def compat() -> dict[str, AgentConfig]:
    loaded = load_agent_directory(COMPAT_AGENTS)
    assert loaded.issues == []
    return by_name(loaded)


# --- compat files ---------------------------------------------------------------------------


@needs_compat
@pytest.mark.parametrize("path", COMPAT_FILES, ids=[path.name for path in COMPAT_FILES])
def test_compat_file_loads_with_no_error_and_no_warning(path: Path) -> None:
    document = parse_agent_document(path.read_text(encoding="utf-8"), str(path))

    assert document.warnings == ()
    assert document.config.name == path.stem


@needs_compat
def test_compat_files_define_the_expected_agents_modes_and_providers(compat: dict[str, AgentConfig]) -> None:
    summary = {name: (c.execution_mode.value, c.llm_config.provider.value) for name, c in compat.items()}

    assert summary == {
        "customer-support": ("continuous", "openai"),
        "daily-reporter": ("scheduled", "openai"),
        "data-analyzer": ("autonomous", "anthropic"),
        "health-monitor": ("scheduled", "anthropic"),
        "research-team": ("collaborative", "openai"),
    }


@needs_compat
def test_compat_daily_reporter_runs_on_a_cron_at_nine_utc(compat: dict[str, AgentConfig]) -> None:
    schedule = compat["daily-reporter"].schedule_config

    assert schedule is not None
    assert (schedule.type, schedule.cron, schedule.timezone) == ("cron", "0 9 * * *", "UTC")
    assert schedule.timeout_seconds == 600
    assert schedule.task_data["report_type"] == "daily"
    assert "alerts_summary" in schedule.task_data["include_sections"]


@needs_compat
def test_compat_health_monitor_runs_every_300_seconds(compat: dict[str, AgentConfig]) -> None:
    schedule = compat["health-monitor"].schedule_config

    assert schedule is not None
    assert (schedule.type, schedule.interval_seconds, schedule.cron) == ("interval", 300, None)
    assert schedule.timeout_seconds == 120
    assert compat["health-monitor"].llm_config.model == "claude-3-haiku-20240307"


@needs_compat
def test_compat_research_team_keeps_its_collaboration_settings(compat: dict[str, AgentConfig]) -> None:
    collaborative = compat["research-team"].collaborative_config

    assert collaborative is not None
    assert collaborative.max_plan_steps == 10
    assert collaborative.preferred_collaborators == ["data-analyzer", "content-writer"]
    assert collaborative.planning_agent is not None
    assert (collaborative.planning_agent.model, collaborative.planning_agent.temperature) == ("gpt-4", 0.3)
    assert collaborative.planning_agent.provider is None  # defaults to the agent's own
    assert collaborative.allow_human_clarification is True
    assert collaborative.clarification_timeout_seconds == 300


@needs_compat
def test_compat_customer_support_keeps_session_settings_and_subscriptions(compat: dict[str, AgentConfig]) -> None:
    agent = compat["customer-support"]

    assert agent.continuous_config is not None
    assert agent.continuous_config.idle_timeout_seconds == 900
    assert agent.continuous_config.save_interval_seconds == 180
    assert agent.continuous_config.max_conversation_history == 100
    assert (agent.llm_config.model, agent.llm_config.temperature, agent.llm_config.max_tokens) == ("gpt-4", 0.7, 2000)
    assert "slack.command.support" in agent.event_subscriptions


@needs_compat
def test_compat_data_analyzer_keeps_its_retry_policy(compat: dict[str, AgentConfig]) -> None:
    retry = compat["data-analyzer"].retry_config

    assert (retry.max_retries, retry.retry_delay_seconds, retry.exponential_backoff) == (3, 5, True)


@needs_compat
def test_compat_tools_are_mcp_servers_with_urls(compat: dict[str, AgentConfig]) -> None:
    tools = {name: [tool.name for tool in config.tools] for name, config in compat.items()}

    assert tools == {
        "customer-support": ["knowledge_base", "ticket_system"],
        "daily-reporter": ["metrics_api", "notification_service"],
        "data-analyzer": ["data_warehouse", "visualization_api"],
        "health-monitor": ["health_api", "alerting_service"],
        "research-team": ["web_search", "academic_db", "fact_checker"],
    }
    every_tool = [tool for config in compat.values() for tool in config.tools]
    assert all(tool.type == "mcp" and tool.url and tool.url.startswith("https://") for tool in every_tool)


# --- config/agents and examples/agents shipped with the repository -----------------------


@pytest.fixture(scope="module")
def shipped() -> AgentDirectory:
    return load_agent_directory(SHIPPED_AGENTS)


@pytest.fixture(scope="module")
def examples() -> AgentDirectory:
    return load_agent_directory(EXAMPLE_AGENTS)


@pytest.mark.parametrize("folder", [SHIPPED_AGENTS, EXAMPLE_AGENTS], ids=["config", "examples"])
def test_shipped_agents_all_load_with_no_error_and_no_warning(folder: Path) -> None:
    loaded = load_agent_directory(folder)

    assert [str(issue) for issue in loaded.issues] == []
    assert [str(w) for d in loaded.documents for w in d.warnings] == []
    assert len(loaded.documents) >= 4


def test_config_agents_call_no_tool_server_and_examples_list_what_they_need(
    shipped: AgentDirectory, examples: AgentDirectory
) -> None:
    readme = (EXAMPLE_AGENTS / "README.md").read_text(encoding="utf-8")

    assert [d.config.name for d in shipped.documents if any(t.type == "mcp" for t in d.config.tools)] == []
    assert {d.config.name for d in shipped.documents} >= {"echo-assistant", "echo-chat"}
    assert [d.config.name for d in examples.documents if f"| `{d.config.name}` |" not in readme] == []
    assert not {d.config.name for d in shipped.documents} & {d.config.name for d in examples.documents}


def test_shipped_agents_are_named_after_their_files(shipped: AgentDirectory, examples: AgentDirectory) -> None:
    documents = [*shipped.documents, *examples.documents]
    misnamed = {Path(d.source).name: d.config.name for d in documents if Path(d.source).stem != d.config.name}

    assert misnamed == {}


def test_shipped_agents_cover_every_mode_and_the_main_providers(
    shipped: AgentDirectory, examples: AgentDirectory
) -> None:
    documents = [*shipped.documents, *examples.documents]
    modes = Counter(d.config.execution_mode for d in documents)
    providers = Counter(d.config.llm_config.provider for d in documents)

    assert set(modes) == set(ExecutionMode)
    expected = {ProviderName.OPENAI, ProviderName.ANTHROPIC, ProviderName.BEDROCK, ProviderName.OLLAMA}
    assert expected | {ProviderName.ECHO} <= set(providers)


def test_shipped_echo_assistant_is_autonomous_on_the_keyless_echo_provider(shipped: AgentDirectory) -> None:
    echo = by_name(shipped)["echo-assistant"]

    assert echo.execution_mode is ExecutionMode.AUTONOMOUS
    assert echo.llm_config.provider is ProviderName.ECHO
