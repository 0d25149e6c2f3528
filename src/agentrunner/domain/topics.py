"""Topic routing rules shared by every event bus adapter (AMQP topic-exchange semantics).

A topic is dot-separated words; a pattern may use `*` for exactly one word and `#` for
zero or more words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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


def check_patterns(patterns: Iterable[str]) -> None:
    """Raise `ValueError` saying what is wrong with the first invalid one of `patterns`: what
    every bus adapter's `subscribe` and `declare` refuse."""
    for pattern in patterns:
        problem = pattern_problem(pattern)
        if problem:
            raise ValueError(problem)


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


# How many agent outputs led to an event; past the limit the next agent does not run.
CHAIN_DEPTH_HEADER = "chain_depth"
# The tenant whose request led to an event: carried along chains so the runs it starts
# count against that tenant's limits and budget.
TENANT_HEADER = "x-agentrunner-tenant"

# The roots of every topic agentrunner publishes itself (work, results, control, Slack,
# plans, budgets, nodes): its control plane. Callers (`POST /events`) and agents (the
# `publish_event` tool) may not write there, or they could forge a result, a cancel, an
# answer or a configuration change. A test checks that every topic the platform publishes
# falls under one of these.
RESERVED_TOPIC_ROOTS: tuple[str, ...] = (
    "invoke",
    "execution",
    "agent.output",
    "config",
    "scheduled",
    "slack",
    "clarification",
    "plan",
    "budget",
    "node",
    "collaboration",
)
_RESERVED_WORDS = tuple(tuple(root.split(".")) for root in RESERVED_TOPIC_ROOTS)


def is_reserved_topic(topic: str) -> bool:
    """Whether `topic` is (or falls under) a root agentrunner publishes itself; matched
    without regard to case, the bare root included (`invoke`, `Invoke.x`)."""
    words = tuple(topic.lower().split("."))
    return any(words[: len(root)] == root for root in _RESERVED_WORDS)
