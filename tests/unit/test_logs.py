"""Logs are one JSON object per line with the trace id of the work in progress."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from agentrunner.logs import configure_logging, get_logger
from agentrunner.tracing import traced


@pytest.fixture
def json_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[list[dict[str, object]]]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("test-service", "INFO")
    with traced("trace-42", "orchestrator"):
        get_logger("t").info("agent invoked", agent_name="my-assistant", execution_id="exec-789")
        logging.getLogger("uvicorn.error").warning("from the stdlib %s", "logger")
    get_logger("t").info("outside any trace")
    get_logger("t").debug("below the level")
    try:
        raise ValueError("broken")
    except ValueError:
        get_logger("t").exception("it failed")
    out = capsys.readouterr().out
    yield [json.loads(line) for line in out.splitlines()]
    root.handlers[:], level = saved
    root.setLevel(level)


def test_every_line_has_the_seed_fields(json_lines: list[dict[str, object]]) -> None:
    assert len(json_lines) == 4
    for record in json_lines:
        assert list(record) == ["timestamp", "level", "service", "trace_id", "message", "metadata"]


def test_our_records_carry_trace_service_and_metadata(json_lines: list[dict[str, object]]) -> None:
    first = json_lines[0]

    assert first["level"] == "INFO"
    assert first["service"] == "orchestrator"
    assert first["trace_id"] == "trace-42"
    assert first["message"] == "agent invoked"
    assert first["metadata"] == {"agent_name": "my-assistant", "execution_id": "exec-789"}
    assert str(first["timestamp"]).endswith("Z")


def test_library_records_are_json_with_the_same_trace(json_lines: list[dict[str, object]]) -> None:
    stdlib = json_lines[1]

    assert (stdlib["level"], stdlib["message"], stdlib["trace_id"]) == ("WARNING", "from the stdlib logger", "trace-42")


def test_outside_a_trace_the_default_service_and_no_trace(json_lines: list[dict[str, object]]) -> None:
    assert (json_lines[2]["service"], json_lines[2]["trace_id"]) == ("test-service", None)


def test_exceptions_are_in_the_metadata(json_lines: list[dict[str, object]]) -> None:
    error = json_lines[3]

    assert error["level"] == "ERROR"
    assert "ValueError: broken" in str(error["metadata"]["exception"])  # type: ignore[index]
