"""An agent file's `output_schema` names a schema file: it may not reach outside the agents
directory (by `..`, an absolute path, or a symlink), nor be too big, nor an alias bomb."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentrunner.adapters.config.files import MAX_SCHEMA_FILE_BYTES, load_agent_directory
from agentrunner.domain.agent_document import AgentFileError, parse_agent_document
from tests.unit.test_agent_document import agent_yaml


@pytest.mark.parametrize("reference", ["../secret.json", "/etc/passwd", "schemas/../../secret.json", "C:/x.json"])
def test_a_path_leaving_the_agents_directory_is_refused_at_parse(reference: str) -> None:
    with pytest.raises(AgentFileError, match="relative to the agent file"):
        parse_agent_document(agent_yaml(extra=f"output_schema: '{reference}'\n"), "agents/a.yml")


def test_a_symlink_out_of_the_agents_directory_is_refused(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (tmp_path / "secret.json").write_text('{"type": "object"}')
    (agents / "link.json").symlink_to(tmp_path / "secret.json")
    (agents / "a.yml").write_text(agent_yaml(name="a", extra="output_schema: link.json\n"))

    loaded = load_agent_directory(agents)

    assert loaded.documents == []
    [issue] = loaded.issues
    assert "outside the agents directory" in issue.message


def test_an_oversized_schema_file_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "big.json").write_text('{"type": "object", "description": "' + "x" * MAX_SCHEMA_FILE_BYTES + '"}')
    (tmp_path / "a.yml").write_text(agent_yaml(name="a", extra="output_schema: big.json\n"))

    [issue] = load_agent_directory(tmp_path).issues

    assert f"over the limit of {MAX_SCHEMA_FILE_BYTES}" in issue.message


def test_a_schema_file_with_aliases_is_refused(tmp_path: Path) -> None:
    bomb = 'a: &a ["x", "x"]\nb: &b [*a, *a]\nc: [*b, *b]\n'
    (tmp_path / "schemas").mkdir()  # beside the agent files, a .yaml file would load as one
    (tmp_path / "schemas" / "bomb.yaml").write_text(bomb)
    (tmp_path / "a.yml").write_text(agent_yaml(name="a", extra="output_schema: schemas/bomb.yaml\n"))

    [issue] = load_agent_directory(tmp_path).issues

    assert "refused" in issue.message
    assert "anchor" in issue.message
