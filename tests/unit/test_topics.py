"""Topic routing (AMQP topic-exchange rules): `*` is exactly one word, `#` zero or more."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from agentrunner.domain.topics import pattern_problem, topic_matches, topic_problem
from tests.topic_reference import PATTERNS, TOPICS, reference_matches

ROUTING_CASES = [
    # pattern, topic, matches
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b", False),
    ("a.b", "a.b.c", False),
    ("a.b.c", "a.b.d", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*", "a.b.c", False),
    ("*.b", "a.b", True),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("a.*.c", "a.b.x.c", False),
    ("*.*", "a.b", True),
    ("*.*", "a", False),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("a.#", "a", True),
    ("a.#", "a.b", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("a.#", "ab", False),
    ("#.b", "b", True),
    ("#.b", "a.b", True),
    ("#.b", "x.y.b", True),
    ("#.b", "b.a", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.x.y", False),
    ("a.#.b", "b.a.b.a", False),
    ("a.*.#", "a.x", True),
    ("a.*.#", "a.x.y.z", True),
    ("a.*.#", "a", False),
    ("#.*", "a", True),
    ("#.*", "a.b.c", True),
    ("#.#", "a", True),
    ("*.#.*", "a", False),
    ("*.#.*", "a.b", True),
    ("execution.finished.#", "execution.finished.echo-helper", True),
    ("slack.command.ask", "slack.command.support", False),
    ("Slack.*", "slack.x", False),  # words are case-sensitive
]


@pytest.mark.parametrize(("pattern", "topic", "matches"), ROUTING_CASES)
def test_routing_table(pattern: str, topic: str, matches: bool) -> None:
    assert topic_matches(pattern, topic) is matches


# --- property: agrees with an independent matcher ----------------------------------------


def test_reference_matcher_agrees_with_the_routing_table() -> None:
    assert [reference_matches(p, t) for p, t, _ in ROUTING_CASES] == [m for _, _, m in ROUTING_CASES]


@settings(max_examples=600, deadline=None, database=None)
@given(pattern=PATTERNS, topic=TOPICS)
def test_topic_matches_agrees_with_a_reference_matcher(pattern: str, topic: str) -> None:
    assert pattern_problem(pattern) is None
    assert topic_problem(topic) is None
    assert topic_matches(pattern, topic) is reference_matches(pattern, topic)


@settings(max_examples=200, deadline=None, database=None)
@given(topic=TOPICS)
def test_a_topic_used_as_a_pattern_matches_itself_and_hash_matches_everything(topic: str) -> None:
    assert topic_matches(topic, topic)
    assert topic_matches("#", topic)
    assert topic_matches(".".join("*" for _ in topic.split(".")), topic)


# --- validation of topics and patterns ----------------------------------------------------


@pytest.mark.parametrize("topic", ["a", "invoke.echo-helper", "slack.command.ask", "user_42.msg:new", "A.B.C"])
def test_valid_topic_has_no_problem(topic: str) -> None:
    assert topic_problem(topic) is None


@pytest.mark.parametrize(
    ("topic", "word"),
    [
        ("a..b", ""),
        (".a", ""),
        ("a.", ""),
        ("a.*", "*"),
        ("a.#", "#"),
        ("a b", "a b"),
        ("a/b", "a/b"),
        ("é", "é"),
        ("a.b\n", "b\n"),
    ],
)
def test_invalid_topic_names_the_bad_word(topic: str, word: str) -> None:
    assert topic_problem(topic) == (
        f"word {word!r} in topic {topic!r} is not valid: use letters, digits, '_', '-' or ':' between dots"
    )


def test_empty_topic_is_rejected() -> None:
    assert topic_problem("") == "a topic must not be empty"


@pytest.mark.parametrize("pattern", ["#", "*", "a.#", "#.b", "a.#.b", "a.*.#", "#.#", "invoke.echo-helper", "x:y.*"])
def test_valid_pattern_has_no_problem(pattern: str) -> None:
    assert pattern_problem(pattern) is None


@pytest.mark.parametrize(
    ("pattern", "word"),
    [
        ("a..b", ""),
        ("foo.*bar", "*bar"),
        ("a.#b", "#b"),
        ("**", "**"),
        ("a.b*", "b*"),
        ("a. b", " b"),
        ("a.", ""),
        ("a\n", "a\n"),
    ],
)
def test_invalid_pattern_names_the_bad_word_and_the_wildcard_rules(pattern: str, word: str) -> None:
    assert pattern_problem(pattern) == (
        f"word {word!r} in pattern {pattern!r} is not valid: use letters, digits, "
        "'_', '-', ':', or a whole-word '*' (one word) or '#' (zero or more words)"
    )


def test_empty_pattern_is_rejected() -> None:
    assert pattern_problem("") == "a pattern must not be empty"
