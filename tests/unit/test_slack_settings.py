"""SLACK_COMMANDS, the routing table, read from the environment as `/command=agent` pairs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentrunner.settings import Settings


def test_slack_commands_are_read_as_command_agent_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_COMMANDS", " /ask=my-assistant , /review=code-reviewer,")
    settings = Settings(_env_file=None)
    assert settings.slack_commands == {"/ask": "my-assistant", "/review": "code-reviewer"}


@pytest.mark.parametrize("value", ["ask=my-assistant", "/ask", "/ask=", "/=agent"])
def test_a_malformed_slack_command_route_is_refused_with_the_expected_form(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SLACK_COMMANDS", value)
    with pytest.raises(ValidationError, match="is not /command=agent"):
        Settings(_env_file=None)
