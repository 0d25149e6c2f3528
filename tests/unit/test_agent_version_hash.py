"""An agent's version hash: what makes a new version, and what must not."""

from __future__ import annotations

from typing import Any

import yaml

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.agent_version import loaded_content

FILE: dict[str, Any] = {
    "name": "writer",
    "agent_type": "t",
    "execution_mode": "autonomous",
    "llm_config": {"provider": "echo", "model": "echo"},
    "system_prompt": "Be brief.",
}


class NextReleaseConfig(AgentConfig):
    """The same schema with one field more, at its default: what an upgrade brings."""

    a_field_of_the_next_release: int = 0


def test_a_field_a_new_release_adds_at_its_default_is_not_a_new_version() -> None:
    before = loaded_content(AgentConfig.model_validate(FILE))
    after = loaded_content(NextReleaseConfig.model_validate(FILE))

    assert after.content_hash == before.content_hash


def test_a_value_written_in_the_file_is_a_new_version_even_when_the_field_existed() -> None:
    written = loaded_content(AgentConfig.model_validate(FILE | {"system_prompt": "Be thorough."}))

    assert written.content_hash != loaded_content(AgentConfig.model_validate(FILE)).content_hash


def test_the_whole_config_is_kept_with_its_defaults_for_work_pinned_to_it() -> None:
    content = loaded_content(AgentConfig.model_validate(FILE))

    assert AgentConfig.model_validate(content.config) == AgentConfig.model_validate(FILE)
    assert "on_check_failure" in content.config


def test_the_kept_text_is_yaml_of_the_document() -> None:
    # Written with libyaml's emitter (4x faster at every start with many agents): the same
    # text as the pure-Python one for a plain file, and for any, YAML that reads back as the
    # document (the two fold a long double-quoted line differently; a version is its hash).
    tricky = FILE | {
        "system_prompt": "Réponds en français.\nLine two: 'quoted' and \"double\" # not a comment\n\ttabbed",
        "description": "yes",  # a YAML 1.1 boolean word, quoted in the text
        "tags": ["0123", "null", "a: b", "ünïcödé ✓", ""],
    }
    plain = loaded_content(AgentConfig.model_validate(FILE))
    content = loaded_content(AgentConfig.model_validate(tricky))

    assert plain.text == yaml.safe_dump(plain.document, sort_keys=True, allow_unicode=True)
    assert yaml.safe_load(content.text) == content.document
    assert content.document["system_prompt"] == tricky["system_prompt"]
    assert content.document["tags"] == tricky["tags"]
