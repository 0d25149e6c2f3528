"""A tool call waiting for a human, as Slack shows it: one button per answer its question
takes, action_ids that name the pause and parse back strictly, the model's arguments
escaped (no mention, no link, no end of the code block) and bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agentrunner.domain.slack import MESSAGE_CHARS
from agentrunner.domain.slack_tool_calls import (
    MAX_ACTION_ID_CHARS,
    escape_mrkdwn,
    escaped_within,
    parse_tool_call_action_id,
    pause_token,
    tool_answered_message,
    tool_call_action_id,
    tool_call_message,
)
from agentrunner.domain.tool_gates import Decision, PauseReason, PendingToolCall
from agentrunner.domain.topics import is_reserved_topic
from agentrunner.runtime.topics import tool_answered_topic, waiting_topic

ASKED = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
EXECUTION = "0123456789abcdef0123456789abcdef"


def _pending(reason: PauseReason = PauseReason.APPROVAL, **arguments: Any) -> PendingToolCall:
    return PendingToolCall(
        reason=reason,
        tool="mail__send",
        arguments=arguments or {"to": "ana@example.com"},
        call_id="call-1",
        generation=0,
        seq=2,
        asked_at=ASKED,
    )


def _buttons(pending: PendingToolCall) -> list[dict[str, Any]]:
    message = tool_call_message(agent="mailer", execution_id=EXECUTION, pending=pending)
    return [e for block in message.blocks if block["type"] == "actions" for e in block["elements"]]


def _section(pending: PendingToolCall) -> str:
    message = tool_call_message(agent="mailer", execution_id=EXECUTION, pending=pending)
    text: str = message.blocks[0]["text"]["text"]
    return text


def test_an_approval_has_approve_and_deny_buttons_naming_the_pause() -> None:
    pending = _pending()
    buttons = _buttons(pending)
    assert [(b["text"]["text"], b.get("style")) for b in buttons] == [("Approve", "primary"), ("Deny", "danger")]
    parsed = [parse_tool_call_action_id(b["action_id"]) for b in buttons]
    assert [(p.decision, p.execution_id, p.token) for p in parsed if p] == [
        (Decision.APPROVE, EXECUTION, pause_token(pending)),
        (Decision.DENY, EXECUTION, pause_token(pending)),
    ]
    assert "`mail__send`" in _section(pending)
    assert '"to": "ana@\u200bexample.com"' in _section(pending)  # '@' defused by a zero-width space


def test_an_unknown_outcome_has_happened_again_and_fail_buttons() -> None:
    pending = _pending(PauseReason.TOOL_OUTCOME_UNKNOWN)
    assert [b["value"] for b in _buttons(pending)] == ["happened", "again", "fail"]
    assert "no result" in _section(pending), "what 'it happened' from Slack tells the model is said"


def test_another_question_of_the_same_run_has_another_token() -> None:
    first = _pending()
    asked_again = first.model_copy(update={"asked_at": ASKED + timedelta(seconds=1)})
    next_step = first.model_copy(update={"seq": 4})
    tokens = {pause_token(first), pause_token(asked_again), pause_token(next_step)}
    assert len(tokens) == 3
    assert pause_token(first) == pause_token(first.model_copy()), "a redelivery names the same pause"


def test_arguments_cannot_mention_link_or_close_the_code_block() -> None:
    hostile = "<!channel> <!here> @here <@U0ADMIN> <https://evil.example|click me> & ``` *bold*"
    section = _section(_pending(body=hostile))
    for forbidden in ("<!", "<@", "<http", "@here", "@channel"):
        assert forbidden not in section
    assert section.count("```") == 2, "the arguments' code block ends where ours does"
    assert "&lt;https://evil.example|click me&gt; &amp;" in section


def test_oversized_arguments_are_cut_and_point_to_the_whole_call() -> None:
    for body in ("x" * 50_000, "&" * 50_000, "<" * 50_000):
        section = _section(_pending(body=body))
        assert len(section) <= MESSAGE_CHARS
        assert f"the whole call is in GET /executions/{EXECUTION}" in section
        assert not section.rstrip("`").endswith("&am"), "never cut inside an escape"


@given(st.text(max_size=300), st.integers(min_value=0, max_value=400))
def test_escaped_within_never_passes_its_limit_nor_cuts_an_escape(text: str, limit: int) -> None:
    shown, cut = escaped_within(text, limit)
    assert len(shown) <= limit
    assert cut == (shown != escape_mrkdwn(text))
    assert escape_mrkdwn(text).startswith(shown)


@given(st.text(max_size=400))
def test_any_action_id_parses_to_none_or_a_well_formed_action(action_id: str) -> None:
    action = parse_tool_call_action_id(action_id)
    if action is not None:
        assert tool_call_action_id(action.decision, action.execution_id, action.token) == action_id


def test_malformed_action_ids_are_refused() -> None:
    token = pause_token(_pending())
    for action_id in (
        f"toolcall:approve:{EXECUTION}:{token}" + "0" * MAX_ACTION_ID_CHARS,
        f"toolcall:nuke:{EXECUTION}:{token}",
        f"toolcall:APPROVE:{EXECUTION}:{token}",
        f"toolcall:approve:{EXECUTION}:{token[:-1]}",
        f"toolcall:approve:{EXECUTION}:{token.upper()}",
        f"toolcall:approve:../{EXECUTION}:{token}",
        f"toolcall:approve::{token}",
        f"toolcall:approve:{EXECUTION}",
        f"toolcall:approve:{EXECUTION}:{token}\n",
        f"clarify:{EXECUTION}:{token}",
    ):
        assert parse_tool_call_action_id(action_id) is None, action_id
    assert parse_tool_call_action_id(f"toolcall:approve:{EXECUTION}:{token}") is not None


def test_an_answered_message_says_who_without_buttons_and_names_no_stranger() -> None:
    message = tool_answered_message(tool="mail__send", decision=Decision.DENY, answered_by="U42")
    assert message.text == ":no_entry_sign: Denied by <@U42>: `mail__send`"
    assert (message.blocks, message.replace_original) == ([], True)
    forged = tool_answered_message(tool="<!channel>", decision=Decision.APPROVE, answered_by="U1> <!channel")
    assert "<!" not in forged.text
    assert "by someone" in forged.text


def test_the_waiting_and_answered_topics_are_the_platforms_own() -> None:
    assert is_reserved_topic(waiting_topic("mailer"))
    assert is_reserved_topic(tool_answered_topic("mailer"))
