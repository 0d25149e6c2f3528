"""docs/configuration.md lists every agent-file field and every setting."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from agentrunner.domain.agent import AgentConfig
from agentrunner.settings import Settings

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _field_paths(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        path = prefix + name
        yield path
        for kind in typing.get_args(field.annotation) or (field.annotation,):
            for inner in typing.get_args(kind) or (kind,):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    yield from _field_paths(inner, path + ".")


def test_every_agent_file_field_is_in_the_reference() -> None:
    text = REFERENCE.read_text()

    missing = [path for path in _field_paths(AgentConfig) if f"| `{path}` |" not in text]

    assert missing == [], f"add these fields to {REFERENCE.name}: {missing}"


def test_every_setting_is_in_the_reference() -> None:
    text = REFERENCE.read_text()

    missing = [name.upper() for name in Settings.model_fields if f"| `{name.upper()}` |" not in text]

    assert missing == [], f"add these settings to {REFERENCE.name}: {missing}"


def test_the_walk_finds_nested_fields() -> None:
    paths = set(_field_paths(AgentConfig))

    assert {"llm_config.pricing.input_per_million", "schedule_config.overlap_policy", "tools.url"} <= paths
