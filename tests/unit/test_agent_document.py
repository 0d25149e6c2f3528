"""parse_agent_document: a valid file becomes an AgentConfig with defaults; every mistake
becomes an issue that names the file, the field path, the line and what would be right."""

from __future__ import annotations

import pytest

from agentrunner.domain.agent import ExecutionMode, ProviderName
from agentrunner.domain.agent_document import AgentFileError, ConfigIssue, parse_agent_document

SOURCE = "agents/probe.yml"


def agent_yaml(*, name: str = "probe", mode: str = "autonomous", provider: str = "echo", extra: str = "") -> str:
    """A small valid agent file; `extra` starts on line 7 (after llm_config on lines 4-6)."""
    return (
        f"name: {name}\n"  # line 1
        "agent_type: tester\n"  # line 2
        f"execution_mode: {mode}\n"  # line 3
        "llm_config:\n"  # line 4
        f"  provider: {provider}\n"  # line 5
        "  model: echo-1\n"  # line 6
        f"{extra}"  # line 7 onwards
    )


def scheduled_yaml(schedule: str) -> str:
    """A scheduled agent whose `schedule_config:` key is on line 7 and `schedule` on line 8 on."""
    return agent_yaml(mode="scheduled", extra="schedule_config:\n" + schedule)


def issues_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(AgentFileError) as caught:
        parse_agent_document(text, SOURCE)
    assert caught.value.source == SOURCE
    return list(caught.value.issues)


def only_issue(text: str) -> ConfigIssue:
    issues = issues_of(text)
    assert len(issues) == 1, issues
    assert issues[0].source == SOURCE
    return issues[0]


# --- valid documents ---------------------------------------------------------------------


def test_valid_document_yields_config_with_documented_defaults_and_no_warnings() -> None:
    document = parse_agent_document(agent_yaml(), SOURCE)

    config = document.config
    assert document.source == SOURCE
    assert document.warnings == ()
    assert config.name == "probe"
    assert config.execution_mode is ExecutionMode.AUTONOMOUS
    assert config.llm_config.provider is ProviderName.ECHO
    assert config.llm_config.model == "echo-1"
    assert config.retry_config.max_retries == 2
    assert config.retry_config.retry_delay_seconds == 1
    assert config.retry_config.exponential_backoff is True
    assert config.timeout_seconds == 300
    assert (config.tools, config.tags, config.event_subscriptions) == ([], [], [])
    assert config.schedule_config is None


def test_schedule_defaults_to_utc_and_a_300_second_timeout() -> None:
    document = parse_agent_document(scheduled_yaml("  type: cron\n  cron: '0 9 * * 1-5'\n"), SOURCE)

    schedule = document.config.schedule_config
    assert schedule is not None
    assert schedule.cron == "0 9 * * 1-5"
    assert schedule.timezone == "UTC"
    assert schedule.timeout_seconds == 300
    assert schedule.task_data == {}


@pytest.mark.parametrize(
    "tool",
    [
        "  - name: kb\n    type: mcp\n    url: https://kb.example.com/mcp\n",
        "  - name: kb\n    type: mcp\n    command: [kb-server, --stdio]\n",
        "  - name: kb\n",  # builtin by default: needs no endpoint
    ],
    ids=["mcp-url", "mcp-command", "builtin"],
)
def test_tool_with_an_endpoint_or_builtin_loads(tool: str) -> None:
    document = parse_agent_document(agent_yaml(extra="tools:\n" + tool), SOURCE)

    assert [t.name for t in document.config.tools] == ["kb"]


# --- missing and unknown values ----------------------------------------------------------


def test_missing_llm_config_names_file_field_and_line() -> None:
    text = "name: probe\nagent_type: tester\nexecution_mode: autonomous\n"

    issue = only_issue(text)

    assert (issue.path, issue.message, issue.line) == ("llm_config", "required field is missing", 1)
    assert str(issue) == "agents/probe.yml:1: llm_config: required field is missing"


def test_missing_name_names_file_field_and_line() -> None:
    text = agent_yaml().replace("name: probe\n", "")

    issue = only_issue(text)

    assert (issue.path, issue.message, issue.line) == ("name", "required field is missing", 1)


def test_missing_nested_field_points_at_the_line_of_its_section() -> None:
    text = agent_yaml().replace("  model: echo-1\n", "")

    issue = only_issue(text)

    assert (issue.path, issue.message, issue.line) == ("llm_config.model", "required field is missing", 4)


def test_unknown_execution_mode_lists_the_allowed_modes() -> None:
    issue = only_issue(agent_yaml(mode="batch"))

    assert issue.path == "execution_mode"
    assert issue.line == 3
    assert issue.message == ("got 'batch', expected one of 'collaborative', 'autonomous', 'continuous' or 'scheduled'")


def test_unknown_provider_lists_the_allowed_providers() -> None:
    issue = only_issue(agent_yaml(provider="gemini"))

    assert issue.path == "llm_config.provider"
    assert issue.line == 5
    assert issue.message.startswith("got 'gemini', expected one of ")
    for provider in ("openai", "anthropic", "bedrock", "ollama", "echo"):
        assert f"'{provider}'" in issue.message


@pytest.mark.parametrize("temperature", ["2.5", "-0.1"])
def test_temperature_out_of_range_names_the_bound(temperature: str) -> None:
    text = agent_yaml().replace("  model: echo-1\n", f"  model: echo-1\n  temperature: {temperature}\n")

    issue = only_issue(text)

    assert issue.path == "llm_config.temperature"
    assert issue.line == 7
    expected = "less than or equal to 2" if temperature.startswith("2") else "greater than or equal to 0"
    assert expected in issue.message


# --- schedules -----------------------------------------------------------------------------


@pytest.mark.parametrize("cron", ["61 * * * *", "* * *", "0 0 9 * * *", "H * * * *"])
def test_invalid_cron_is_rejected_with_the_expected_format(cron: str) -> None:
    issue = only_issue(scheduled_yaml(f"  type: cron\n  cron: '{cron}'\n"))

    assert issue.path == "schedule_config.cron"
    assert issue.line == 9
    assert issue.message == (
        f"invalid cron {cron!r}: expected 5 fields 'minute hour day-of-month month day-of-week', e.g. \"0 9 * * 1-5\""
    )


def test_cron_type_without_cron_asks_for_an_expression() -> None:
    issue = only_issue(scheduled_yaml("  type: cron\n"))

    assert (issue.path, issue.line) == ("schedule_config", 7)
    assert issue.message == "type 'cron' needs a 'cron' expression such as \"0 9 * * *\""


@pytest.mark.parametrize("seconds", ["0", "-5"])
def test_interval_seconds_must_be_greater_than_zero(seconds: str) -> None:
    issue = only_issue(scheduled_yaml(f"  type: interval\n  interval_seconds: {seconds}\n"))

    assert (issue.path, issue.line) == ("schedule_config.interval_seconds", 9)
    assert issue.message == "Input should be greater than 0"


def test_interval_type_without_interval_seconds_asks_for_it() -> None:
    issue = only_issue(scheduled_yaml("  type: interval\n"))

    assert (issue.path, issue.line) == ("schedule_config", 7)
    assert issue.message == "type 'interval' needs 'interval_seconds' greater than 0"


def test_unknown_schedule_type_lists_cron_and_interval() -> None:
    issue = only_issue(scheduled_yaml("  type: weekly\n"))

    assert (issue.path, issue.line) == ("schedule_config.type", 8)
    assert issue.message == "Input should be 'cron' or 'interval'"


def test_scheduled_mode_without_schedule_config_asks_for_one() -> None:
    issue = only_issue(agent_yaml(mode="scheduled"))

    assert issue.message == "execution_mode 'scheduled' needs a 'schedule_config' (type cron or interval)"
    assert issue.line is not None


def test_scheduled_mode_without_schedule_config_names_the_field() -> None:
    issue = only_issue(agent_yaml(mode="scheduled"))

    assert issue.path in {"schedule_config", "execution_mode"}


@pytest.mark.parametrize("zone", ["Mars/Olympus", "utc+2", ""])
def test_bad_timezone_suggests_an_iana_name(zone: str) -> None:
    issue = only_issue(scheduled_yaml(f"  type: interval\n  interval_seconds: 60\n  timezone: '{zone}'\n"))

    assert (issue.path, issue.line) == ("schedule_config.timezone", 10)
    assert issue.message == f"unknown timezone {zone!r}: use an IANA name such as 'UTC' or 'Europe/Paris'"


def test_iana_timezone_is_kept() -> None:
    text = scheduled_yaml("  type: interval\n  interval_seconds: 60\n  timezone: Europe/Paris\n")

    schedule = parse_agent_document(text, SOURCE).config.schedule_config

    assert schedule is not None
    assert (schedule.interval_seconds, schedule.timezone) == (60, "Europe/Paris")


# --- names, subscriptions, tools -----------------------------------------------------------


@pytest.mark.parametrize("name", ["My Agent", "a.b", "Agent", "-lead", "a" * 64])
def test_bad_agent_name_explains_the_allowed_characters(name: str) -> None:
    issue = only_issue(agent_yaml(name=f"'{name}'"))

    assert (issue.path, issue.line) == ("name", 1)
    assert issue.message == (
        f"got {name!r}: use lowercase letters, digits, '-' or '_' "
        "(it becomes a routing-key word, so no dots or spaces), at most 63 characters"
    )


@pytest.mark.parametrize(("pattern", "word"), [("a..b", ""), ("foo.*bar", "*bar"), ("a.#b", "#b"), ("", "")])
def test_invalid_subscription_pattern_names_the_pattern_and_the_bad_word(pattern: str, word: str) -> None:
    issue = only_issue(agent_yaml(extra=f"event_subscriptions:\n  - ok.topic\n  - '{pattern}'\n"))

    assert issue.path.startswith("event_subscriptions")
    assert issue.line is not None
    assert issue.line >= 7
    if pattern:
        assert f"word {word!r} in pattern {pattern!r} is not valid" in issue.message
        assert "a whole-word '*' (one word) or '#' (zero or more words)" in issue.message
    else:
        assert issue.message == "a pattern must not be empty"


def test_every_invalid_subscription_pattern_is_reported_with_its_index() -> None:
    issues = issues_of(agent_yaml(extra="event_subscriptions:\n  - a..b\n  - ok.topic\n  - foo.*bar\n"))

    assert [(i.path, i.line) for i in issues] == [("event_subscriptions.0", 8), ("event_subscriptions.2", 10)]


def test_valid_subscription_patterns_are_kept() -> None:
    text = agent_yaml(extra="event_subscriptions:\n  - '#'\n  - a.*.#\n  - slack.command.ask\n")

    assert parse_agent_document(text, SOURCE).config.event_subscriptions == ["#", "a.*.#", "slack.command.ask"]


def test_mcp_tool_without_url_or_command_names_the_tool_entry_and_its_line() -> None:
    tools = "tools:\n  - name: kb\n    type: mcp\n    url: https://kb.example.com/mcp\n  - name: files\n    type: mcp\n"

    issue = only_issue(agent_yaml(extra=tools))

    assert (issue.path, issue.line) == ("tools.1", 11)
    assert issue.message == "an 'mcp' tool needs a 'url' (HTTP server) or a 'command' (stdio server)"


def test_duplicate_tool_names_are_listed() -> None:
    tools = "tools:\n  - name: kb\n  - name: search\n  - name: kb\n"

    issue = only_issue(agent_yaml(extra=tools))

    assert issue.message == "tool names must be unique, repeated: kb"
    assert issue.line is not None


def test_duplicate_tool_names_point_at_the_tools_field() -> None:
    issue = only_issue(agent_yaml(extra="tools:\n  - name: kb\n  - name: kb\n"))

    assert (issue.path, issue.line) == ("tools", 7)


# --- YAML-level problems ------------------------------------------------------------------


def test_yaml_syntax_error_reports_the_line() -> None:
    issue = only_issue(agent_yaml(extra="description: a: b\n"))

    assert (issue.path, issue.line) == ("", 7)
    assert issue.message == "YAML syntax error: mapping values are not allowed in this context"
    assert str(issue) == "agents/probe.yml:7: YAML syntax error: mapping values are not allowed in this context"


def test_unclosed_flow_list_reports_what_was_expected() -> None:
    issue = only_issue(agent_yaml(extra="tags: [a, b\nsystem_prompt: hi\n"))

    assert issue.line == 8
    assert issue.message.startswith("YAML syntax error: while parsing a flow sequence")
    assert "expected ',' or ']'" in issue.message


def test_second_yaml_document_in_one_file_is_rejected() -> None:
    issue = only_issue(agent_yaml() + "---\n" + agent_yaml())

    assert issue.line == 7
    assert "expected a single document" in issue.message


def test_python_tags_are_not_constructed() -> None:
    issue = only_issue(agent_yaml(extra="description: !!python/object/apply:os.system [echo hi]\n"))

    assert issue.line == 7
    assert issue.message.startswith("YAML syntax error: could not determine a constructor")


@pytest.mark.parametrize(
    ("text", "found"),
    [("- name: a\n- name: b\n", "list"), ("", "empty"), ("# nothing yet\n", "empty"), ("just words\n", "str")],
    ids=["list", "empty", "only-comment", "scalar"],
)
def test_top_level_that_is_not_a_mapping_is_one_issue_on_line_1(text: str, found: str) -> None:
    issue = only_issue(text)

    assert (issue.path, issue.line) == ("", 1)
    assert issue.message == f"expected a mapping of agent fields at the top level, found {found}"


# --- several problems, warnings ----------------------------------------------------------


def test_several_errors_in_one_file_are_all_reported_in_file_order() -> None:
    text = (
        "name: Bad Name\n"
        "agent_type: tester\n"
        "execution_mode: batch\n"
        "llm_config:\n"
        "  provider: gemini\n"
        "  model: x\n"
        "  temperature: 5\n"
    )

    issues = issues_of(text)

    assert [(i.path, i.line) for i in issues] == [
        ("name", 1),
        ("execution_mode", 3),
        ("llm_config.provider", 5),
        ("llm_config.temperature", 7),
    ]
    assert all(i.source == SOURCE for i in issues)


def test_file_error_message_joins_every_issue() -> None:
    with pytest.raises(AgentFileError) as caught:
        parse_agent_document(agent_yaml(mode="batch", provider="gemini"), SOURCE)

    message = str(caught.value)
    assert message.startswith("invalid agent file agents/probe.yml:3: execution_mode: got 'batch'")
    assert "; agents/probe.yml:5: llm_config.provider: got 'gemini'" in message


def test_unknown_fields_are_warnings_with_path_and_line_not_errors() -> None:
    text = agent_yaml(extra="foo: 1\n").replace("  model: echo-1\n", "  model: echo-1\n  bar: 2\n")

    document = parse_agent_document(text, SOURCE)

    assert document.config.name == "probe"
    assert sorted((w.path, w.line, w.message) for w in document.warnings) == [
        ("foo", 8, "unknown field, ignored"),
        ("llm_config.bar", 7, "unknown field, ignored"),
    ]
    assert "agents/probe.yml:8: foo: unknown field, ignored" in [str(w) for w in document.warnings]


def test_unknown_fields_inside_lists_and_nested_sections_are_warned_about() -> None:
    text = agent_yaml(
        mode="collaborative",
        extra=(
            "tools:\n"  # 7
            "  - name: kb\n"  # 8
            "    colour: red\n"  # 9
            "collaborative_config:\n"  # 10
            "  planning_agent:\n"  # 11
            "    model: gpt-4\n"  # 12
            "    temp: 1\n"  # 13
        ),
    )

    document = parse_agent_document(text, SOURCE)

    assert sorted((w.path, w.line) for w in document.warnings) == [
        ("collaborative_config.planning_agent.temp", 13),
        ("tools.0.colour", 9),
    ]


def test_free_form_task_data_raises_no_warning() -> None:
    text = scheduled_yaml("  type: interval\n  interval_seconds: 60\n  task_data:\n    anything: [1, 2]\n")

    document = parse_agent_document(text, SOURCE)

    assert document.warnings == ()
    assert document.config.schedule_config is not None
    assert document.config.schedule_config.task_data == {"anything": [1, 2]}


def test_a_repeated_key_is_an_error_pointing_at_both_lines() -> None:
    text = agent_yaml(extra="description: first\ndescription: second\n")
    lines = text.splitlines()
    first, second = (i + 1 for i, line in enumerate(lines) if line.startswith("description:"))

    issue = only_issue(text)

    assert (issue.path, issue.line) == ("description", second)
    assert issue.message == f"duplicate key: also set at line {first}"


def test_an_unknown_key_with_a_dot_is_warned_at_its_own_line() -> None:
    text = agent_yaml(extra="foo.bar: 1\n")
    line = next(i + 1 for i, row in enumerate(text.splitlines()) if row.startswith("foo.bar"))

    document = parse_agent_document(text, "probe.yml")

    assert [(w.path, w.line) for w in document.warnings] == [("foo.bar", line)]
