"""load_agent_directory and `agentrunner validate`: one bad file never stops the others, and
every problem is reported with its file, line and field."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from agentrunner.adapters.config.files import load_agent_directory
from agentrunner.cli import app
from tests.conftest import FIXTURE_AGENTS

BAD_AGENTS = FIXTURE_AGENTS.parent / "bad_agents"

FIXTURE_NAMES = ("anthropic-analyst", "bedrock-reporter", "echo-helper", "echo-planner", "echo-ticker", "openai-writer")


def agent_yaml(name: str, *, mode: str = "autonomous") -> str:
    """A small valid agent file for `name`; `mode` sits on line 3."""
    return f"name: {name}\nagent_type: tester\nexecution_mode: {mode}\nllm_config:\n  provider: echo\n  model: echo\n"


def write(directory: Path, filename: str, text: str) -> Path:
    path = directory / filename
    path.write_text(text, encoding="utf-8")
    return path


def flat(text: str) -> str:
    """Output with rich's line wrapping undone, so a long message can be matched whole."""
    return " ".join(text.split())


# --- load_agent_directory -------------------------------------------------------------------


def test_one_bad_file_does_not_stop_the_others(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", agent_yaml("alpha"))
    bad = write(tmp_path, "b.yml", agent_yaml("bravo", mode="batch"))
    write(tmp_path, "c.yml", agent_yaml("charlie"))

    loaded = load_agent_directory(tmp_path)

    assert [d.config.name for d in loaded.documents] == ["alpha", "charlie"]
    assert [b.source for b in loaded.broken] == [str(bad)]
    assert [(i.source, i.path, i.line) for i in loaded.issues] == [(str(bad), "execution_mode", 3)]


def test_files_load_in_file_name_order(tmp_path: Path) -> None:
    for filename in ("zulu.yml", "alpha.yml", "mike.yml"):
        write(tmp_path, filename, agent_yaml(filename.removesuffix(".yml")))

    loaded = load_agent_directory(tmp_path)

    assert [d.config.name for d in loaded.documents] == ["alpha", "mike", "zulu"]


def test_duplicate_name_keeps_the_first_file_by_name_and_reports_the_second_naming_the_first(tmp_path: Path) -> None:
    second = write(tmp_path, "b-second.yml", agent_yaml("shared"))  # written first: order on disk must not matter
    first = write(tmp_path, "a-first.yml", agent_yaml("shared"))

    loaded = load_agent_directory(tmp_path)

    assert [d.source for d in loaded.documents] == [str(first)]
    [issue] = loaded.issues
    assert (issue.source, issue.path) == (str(second), "name")
    assert issue.message == f"duplicate agent name 'shared': already defined in {first}"
    assert loaded.broken[0].claimed_name is None  # the name belongs to the first file


def test_broken_file_with_a_readable_name_is_reported_with_its_claimed_name(tmp_path: Path) -> None:
    write(tmp_path, "worker.yml", agent_yaml("worker", mode="batch"))

    [broken] = load_agent_directory(tmp_path).broken

    assert broken.claimed_name == "worker"
    assert [i.path for i in broken.issues] == ["execution_mode"]


def test_claimed_name_is_kept_even_when_the_name_itself_is_invalid(tmp_path: Path) -> None:
    write(tmp_path, "worker.yml", agent_yaml("'My Worker'"))

    [broken] = load_agent_directory(tmp_path).broken

    assert broken.claimed_name == "My Worker"
    assert [i.path for i in broken.issues] == ["name"]


def test_broken_file_without_a_readable_name_claims_none(tmp_path: Path) -> None:
    write(tmp_path, "syntax.yml", agent_yaml("syntax") + "description: a: b\n")
    write(tmp_path, "list-name.yml", agent_yaml("[a, b]"))
    write(tmp_path, "top-list.yml", "- name: a\n")

    loaded = load_agent_directory(tmp_path)

    assert {Path(b.source).name: b.claimed_name for b in loaded.broken} == {
        "list-name.yml": None,
        "syntax.yml": None,
        "top-list.yml": None,
    }


def test_yaml_and_yml_both_load_and_other_suffixes_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "short.yml", agent_yaml("short"))
    write(tmp_path, "long.yaml", agent_yaml("long"))
    for ignored in ("notes.txt", "agent.json", "backup.yml.bak", "README.md", "editor.yml~"):
        write(tmp_path, ignored, "not: [an agent")
    (tmp_path / "folder.yml").mkdir()
    (tmp_path / "nested").mkdir()
    write(tmp_path / "nested", "deep.yml", agent_yaml("deep"))

    loaded = load_agent_directory(tmp_path)

    assert sorted(d.config.name for d in loaded.documents) == ["long", "short"]
    assert loaded.broken == []


def test_missing_directory_is_one_issue_not_an_exception(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"

    loaded = load_agent_directory(missing)

    assert loaded.documents == []
    [issue] = loaded.issues
    assert issue.source == str(missing)
    assert issue.message == "agents directory not found: create it or set AGENTS_DIR"
    assert str(issue) == f"{missing}: agents directory not found: create it or set AGENTS_DIR"


def test_empty_directory_loads_nothing_and_reports_nothing(tmp_path: Path) -> None:
    loaded = load_agent_directory(tmp_path)

    assert (loaded.documents, loaded.broken) == ([], [])


def test_file_that_is_not_utf8_is_reported_not_raised(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yml"
    bad.write_bytes(agent_yaml("latin").replace("tester", "t\xe9ster").encode("latin-1"))
    write(tmp_path, "ok.yml", agent_yaml("ok"))

    loaded = load_agent_directory(tmp_path)

    assert [d.config.name for d in loaded.documents] == ["ok"]
    [issue] = loaded.issues
    assert issue.source == str(bad)
    assert issue.message.startswith("cannot read file: 'utf-8' codec can't decode")


def test_warnings_stay_on_their_document_and_are_not_issues(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", agent_yaml("alpha") + "colour: blue\n")

    loaded = load_agent_directory(tmp_path)

    assert loaded.issues == []
    [document] = loaded.documents
    assert [(w.path, w.line) for w in document.warnings] == [("colour", 7)]


def test_fixture_agents_load_with_no_error_and_no_warning() -> None:
    loaded = load_agent_directory(FIXTURE_AGENTS)

    assert loaded.issues == []
    assert [w for d in loaded.documents for w in d.warnings] == []
    assert {Path(d.source).stem: d.config.name for d in loaded.documents} == {name: name for name in FIXTURE_NAMES}


def test_bad_agents_fixture_keeps_its_one_good_file_and_reports_the_rest() -> None:
    loaded = load_agent_directory(BAD_AGENTS)

    assert [d.config.name for d in loaded.documents] == ["good-echo"]
    assert {Path(b.source).name: b.claimed_name for b in loaded.broken} == {
        "bad-cron.yaml": "bad-cron",
        "syntax-error.yml": None,
        "unknown-mode.yml": "unknown-mode",
    }


# --- agentrunner validate -------------------------------------------------------------------


def test_validate_good_directory_exits_0_and_prints_a_table_of_agents() -> None:
    result = CliRunner().invoke(app, ["validate", str(FIXTURE_AGENTS)])

    assert result.exit_code == 0, result.output
    table = result.stdout
    for header in ("name", "mode", "provider", "model", "file"):
        assert header in table
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if line.count("│") == 6}
    assert set(rows) == set(FIXTURE_NAMES)
    assert [cell.strip() for cell in rows["echo-ticker"].split("│")[1:6]] == [
        "echo-ticker",
        "scheduled",
        "echo",
        "echo",
        "echo-ticker.yaml",
    ]
    assert "6 valid, 0 invalid" in table
    assert result.stderr == ""


def test_validate_bad_directory_exits_1_and_prints_each_error_with_file_line_and_field() -> None:
    result = CliRunner().invoke(app, ["validate", str(BAD_AGENTS)])

    assert result.exit_code == 1
    assert "good-echo" in result.stdout
    errors = flat(result.stderr)
    assert (
        f"error {BAD_AGENTS / 'unknown-mode.yml'}:3: execution_mode: got 'batch', expected one of "
        "'collaborative', 'autonomous', 'continuous' or 'scheduled'"
    ) in errors
    assert f"error {BAD_AGENTS / 'bad-cron.yaml'}:9: schedule_config.cron: invalid cron '61 * * * *'" in errors
    assert f"error {BAD_AGENTS / 'syntax-error.yml'}:7: YAML syntax error: mapping values are not allowed" in errors
    assert errors.endswith("1 valid, 3 invalid")


def test_validate_reports_a_duplicate_name_with_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yml", agent_yaml("twin"))
    second = write(tmp_path, "b.yml", agent_yaml("twin"))

    result = CliRunner().invoke(app, ["validate", str(tmp_path)])

    assert result.exit_code == 1
    assert f"error {second}:1: name: duplicate agent name 'twin': already defined in {first}" in flat(result.stderr)


def test_validate_prints_warnings_for_unknown_fields_and_still_exits_0(tmp_path: Path) -> None:
    agent = write(tmp_path, "a.yml", agent_yaml("alpha") + "colour: blue\n")

    result = CliRunner().invoke(app, ["validate", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert f"warning {agent}:7: colour: unknown field, ignored" in flat(result.stderr)
    assert "1 valid, 0 invalid" in result.stdout


def test_validate_missing_directory_exits_1_with_one_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    result = CliRunner().invoke(app, ["validate", str(missing)])

    assert result.exit_code == 1
    assert result.stdout == ""
    assert flat(result.stderr) == (
        f"error {missing}: agents directory not found: create it or set AGENTS_DIR 0 valid, 1 invalid"
    )
