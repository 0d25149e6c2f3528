"""Long answers are cut to fit Slack; clarification buttons carry the action_id contract."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agentrunner.domain.slack import (
    clarification_message,
    parse_clarify_action_id,
    reply_messages,
    split_text,
)


@given(st.text(alphabet=st.sampled_from("ab \n"), max_size=400), st.integers(min_value=1, max_value=50))
def test_split_text_keeps_every_character_within_the_limit(text: str, limit: int) -> None:
    pieces = split_text(text, limit)
    assert "".join(pieces) == text
    assert all(len(piece) <= limit for piece in pieces)
    assert all(pieces[:-1]), "no empty piece but a lone one"


def test_split_text_cuts_at_line_breaks() -> None:
    text = "first line\nsecond line\nthird"
    assert split_text(text, 15) == ["first line\n", "second line\n", "third"]


def test_a_reply_too_long_for_its_messages_ends_with_where_to_read_the_rest() -> None:
    messages = reply_messages("x" * 100, max_messages=2, note="see execution e1", limit=30)
    assert len(messages) == 2
    assert messages[-1].text.endswith("… see execution e1")
    assert all(len(message.text) <= 30 for message in messages)


def test_a_confirm_question_has_yes_and_no_buttons_with_the_contract_action_id() -> None:
    message = clarification_message(
        run_id="r1", clarification_id="c1", question="Deploy now?", kind="confirm", options=[], default="no"
    )
    buttons = [element for block in message.blocks if block["type"] == "actions" for element in block["elements"]]
    assert [(b["value"], b["action_id"]) for b in buttons] == [("yes", "clarify:r1:c1"), ("no", "clarify:r1:c1")]
    assert parse_clarify_action_id("clarify:r1:c1") == ("r1", "c1")
    assert parse_clarify_action_id("approve") is None
    assert parse_clarify_action_id("clarify:r1") is None


def test_a_choice_question_has_one_button_per_option() -> None:
    message = clarification_message(
        run_id="r1", clarification_id="c1", question="Which?", kind="choice", options=["a", "b", "c"], default=None
    )
    values = [
        element["value"] for block in message.blocks if block["type"] == "actions" for element in block["elements"]
    ]
    assert values == ["a", "b", "c"]
