"""The edge's size bounds (api/limits.py) and the history bound (runtime/conversation.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentrunner.api.limits import StreamSlots, check_task_size, cut_mapping, cut_text, execution_preview, json_size
from agentrunner.domain.errors import PayloadTooLargeError, TooManyStreamsError
from agentrunner.domain.execution import Execution, ExecutionStatus, ToolCallRecord
from agentrunner.domain.tool_gates import Decision, PauseReason, PendingToolCall, ToolCallAnswer
from agentrunner.runtime.conversation import bound_history, history_size
from agentrunner.tracing import as_tenant

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
    max_leaves=30,
)


def test_a_task_over_the_limit_names_the_limit_and_the_setting() -> None:
    check_task_size({"prompt": "x" * 87}, 100)  # 100 bytes as JSON

    with pytest.raises(PayloadTooLargeError, match=r"over the limit of 100 bytes \(MAX_TASK_BYTES\)"):
        check_task_size({"prompt": "x" * 100}, 100)


def test_a_cut_text_never_splits_a_character() -> None:
    text, cut = cut_text("é" * 100, 101)

    assert cut is True
    assert text == "é" * 50


@given(st.dictionaries(st.text(max_size=40), JSON_VALUES, max_size=12), st.integers(min_value=64, max_value=2048))
def test_a_cut_mapping_stays_a_mapping_within_about_its_limit(value: dict[str, Any], limit: int) -> None:
    kept, cut = cut_mapping(value, limit)

    assert isinstance(kept, dict)
    assert list(kept) == list(value)[: len(kept)]
    if not cut:
        assert kept == value
    assert json_size(kept) <= limit


def test_a_preview_cuts_input_output_and_tool_calls_and_says_so() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    call = ToolCallRecord(
        call_id="c1", name="t", arguments={"q": "a" * 5000}, result="r" * 5000,
        started_at=moment, finished_at=moment, duration_ms=1,
    )  # fmt: skip
    execution = Execution(
        execution_id="e", agent="a", input={"prompt": "p" * 5000}, output="o" * 5000, tool_calls=[call], trace_id="t"
    )

    shown, cut = execution_preview(execution, 2048)
    small, small_cut = execution_preview(
        execution.model_copy(update={"input": {"p": 1}, "output": "x", "tool_calls": []}), 2048
    )

    assert cut is True
    assert json_size(shown.input) <= 2048
    assert len(shown.output or "") == 2048
    assert len(shown.tool_calls[0].result or "") == 2048
    assert small_cut is False
    assert small.input == {"p": 1}


def test_a_preview_cuts_the_tool_call_an_execution_waits_on() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    pending = PendingToolCall(
        reason=PauseReason.TOOL_OUTCOME_UNKNOWN, tool="send", arguments={"body": "b" * 50_000, "to": "x"},
        call_id="c1", generation=1, seq=2, asked_at=moment,
        answer=ToolCallAnswer(decision=Decision.HAPPENED, result="r" * 100_000, answered_at=moment),
    )  # fmt: skip
    execution = Execution(
        execution_id="e", agent="a", status=ExecutionStatus.WAITING_APPROVAL, pending_tool_call=pending, trace_id="t"
    )

    shown, cut = execution_preview(execution, 2048)

    assert cut is True
    assert shown.pending_tool_call is not None
    assert json_size(shown.pending_tool_call.arguments) <= 2048
    assert pending.arguments["body"].startswith(shown.pending_tool_call.arguments["body"])
    assert shown.pending_tool_call.answer is not None
    assert len(shown.pending_tool_call.answer.result or "") == 2048
    assert (shown.pending_tool_call.tool, shown.pending_tool_call.reason) == ("send", PauseReason.TOOL_OUTCOME_UNKNOWN)
    assert execution.pending_tool_call == pending  # the record itself is whole


def test_stream_slots_are_counted_per_tenant_and_given_back() -> None:
    slots = StreamSlots(per_tenant=1)
    with as_tenant("team-a"):
        held = slots.take()
        with pytest.raises(TooManyStreamsError, match="MAX_STREAMS_PER_TENANT"):
            slots.take()
    with as_tenant("team-b"):
        assert slots.take() == "team-b"

    with slots.held(held):
        pass

    assert slots.open_count("team-a") == 0
    assert slots.open_count("team-b") == 1


def test_a_history_keeps_its_newest_messages_within_the_bytes() -> None:
    history = [{"role": "user", "content": f"{n} " + "x" * 100} for n in range(20)]

    bounded = bound_history(history, 1000)

    assert history_size(bounded) <= 1000 < history_size(history[-len(bounded) - 1 :])
    assert bounded == history[-len(bounded) :]
    assert history_size(history) == len(json.dumps(history, separators=(",", ":")).encode())
