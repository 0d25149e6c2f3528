"""An agent's version hash: what makes a new version, and what must not."""

from __future__ import annotations

from typing import Any

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
