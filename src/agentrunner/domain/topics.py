"""Topic routing rules shared by every event bus adapter (AMQP topic-exchange semantics).

A topic is dot-separated words; a pattern may use `*` for exactly one word and `#` for
zero or more words.
"""

from __future__ import annotations

import re
from functools import lru_cache

_WORD = re.compile(r"[A-Za-z0-9_\-:]+")


def topic_problem(topic: str) -> str | None:
    """Say what is wrong with a concrete topic (routing key), or None when it is valid."""
    if not topic:
        return "a topic must not be empty"
    for word in topic.split("."):
        if not _WORD.fullmatch(word):
            return f"word {word!r} in topic {topic!r} is not valid: use letters, digits, '_', '-' or ':' between dots"
    return None


def pattern_problem(pattern: str) -> str | None:
    """Say what is wrong with a subscription pattern, or None when it is valid."""
    if not pattern:
        return "a pattern must not be empty"
    for word in pattern.split("."):
        if word not in ("*", "#") and not _WORD.fullmatch(word):
            return (
                f"word {word!r} in pattern {pattern!r} is not valid: use letters, digits, "
                "'_', '-', ':', or a whole-word '*' (one word) or '#' (zero or more words)"
            )
    return None


def _words_match(pattern: list[str], topic: list[str]) -> bool:
    # Dynamic programming over (pattern words, topic words): linear in each, however many
    # '#' a pattern has (a naive backtracking matcher is exponential in them).
    matched = [True] + [False] * len(topic)  # matched[j]: the pattern so far matches topic[:j]
    for word in pattern:
        if word == "#":
            for j in range(1, len(topic) + 1):
                matched[j] = matched[j] or matched[j - 1]
        else:
            matched = [False] + [matched[j - 1] and word in ("*", topic[j - 1]) for j in range(1, len(topic) + 1)]
    return matched[-1]


@lru_cache(maxsize=65536)
def topic_matches(pattern: str, topic: str) -> bool:
    """True when `topic` would be routed to a queue bound with `pattern`."""
    return _words_match(pattern.split("."), topic.split("."))
