"""The platform's own topics are one list (domain/topics.py): every topic agentrunner
publishes falls under it, matched without regard to case, the bare root included; and
every topic, pattern and queue name is built in one catalogue (runtime/topics.py)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from agentrunner.domain.agent import ToolConfig
from agentrunner.domain.topics import RESERVED_TOPIC_ROOTS, is_reserved_topic
from agentrunner.runtime import topics

SRC = Path(__file__).resolve().parents[2] / "src" / "agentrunner"
# The methods whose first argument is a topic the platform publishes.
PUBLISHING_CALLS = {"announce", "event", "publish_event"}


def _catalogued() -> list[str]:
    """Every topic and pattern of the catalogue (each builder given placeholder words)."""
    built: list[str] = []
    for name in topics.__all__:
        value = getattr(topics, name)
        if name.endswith(("_topic", "_pattern")) and not name.startswith("is_"):  # not the predicates
            built.append(value(*["w"] * len(inspect.signature(value).parameters)))
        elif name.endswith("_PATTERN") or name in ("SCHEDULED_TASKS", "CONFIG_CHANGED"):
            built.append(value)
    return built


def test_every_topic_helper_and_constant_names_a_reserved_topic() -> None:
    published = _catalogued()
    assert len(published) >= 20, "every builder of the catalogue is looked at"
    assert [topic for topic in published if not is_reserved_topic(topic)] == []


# Topic words written outside the catalogue, each for a reason.
_OUTSIDE_THE_CATALOGUE = {
    ("adapters/telemetry/otel.py", "execution.progress."),  # adapters do not import the runtime
    ("domain/slack.py", "slack."),  # the domain imports nothing above it
    ("runtime/webhooks.py", "execution.finished"),  # the webhook body's event name, not a topic
    ("domain/audit.py", "config.reload"),  # an audit entry's action name, not a topic
}
# The first words of the platform's topics and queue names.
_ROOTS = {root.split(".")[0] for root in RESERVED_TOPIC_ROOTS} | {"agent", "collaborative", "orchestrator", "worker"}


def test_every_topic_pattern_and_queue_name_is_built_in_the_catalogue() -> None:
    written: set[tuple[str, str]] = set()
    for path in SRC.rglob("*.py"):
        where = str(path.relative_to(SRC))
        if where in ("runtime/topics.py", "domain/topics.py"):
            continue
        tree = ast.parse(path.read_text())
        pieces = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
        for node in ast.walk(tree):
            text = None if id(node) in pieces else _literal_prefix(node) if isinstance(node, ast.expr) else None
            if text and "." in text and " " not in text and text.split(".")[0] in _ROOTS:
                written.add((where, text))
    assert written - _OUTSIDE_THE_CATALOGUE == set(), "build these in runtime/topics.py"


def _literal_prefix(node: ast.expr) -> str | None:
    """The text a topic expression starts with (an f-string's holes become a word)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        # An f-string's constant parts are always str; the check narrows the type.
        return "".join(
            part.value if isinstance(part, ast.Constant) and isinstance(part.value, str) else "x"
            for part in node.values
        )
    return None


def _published_topics() -> list[tuple[str, str]]:
    """Every literal topic in src/: `topic=` keywords, `topic = ...` assignments, what a
    `*_topic` function returns, the first argument of announce/event/publish_event."""
    found: list[tuple[str, str]] = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            candidates: list[ast.expr] = []
            if isinstance(node, ast.Call):
                candidates += [kw.value for kw in node.keywords if kw.arg == "topic"]
                name = node.func.attr if isinstance(node.func, ast.Attribute) else None
                if name in PUBLISHING_CALLS and node.args:
                    candidates.append(node.args[0])
            elif isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id in ("topic", "CONFIG_CHANGED", "SCHEDULED_TASKS")
                for target in node.targets
            ):
                candidates.append(node.value)
            elif isinstance(node, ast.FunctionDef) and node.name.endswith("_topic"):
                candidates += [ret.value for ret in ast.walk(node) if isinstance(ret, ast.Return) and ret.value]
            for candidate in candidates:
                text = _literal_prefix(candidate)
                if text is not None and "." in text:
                    found.append((f"{path.relative_to(SRC)}:{candidate.lineno}", text))
    return found


def test_every_topic_the_platform_publishes_falls_under_a_reserved_root() -> None:
    found = _published_topics()
    assert len(found) >= 15, "the scan finds the platform's topics"
    assert [(where, topic) for where, topic in found if not is_reserved_topic(topic)] == []


@pytest.mark.parametrize(
    "topic",
    [
        *RESERVED_TOPIC_ROOTS,
        *(f"{root}.anything" for root in RESERVED_TOPIC_ROOTS),
        "Invoke.x",
        "INVOKE",
        "Execution.Finished.agent",
        "agent.OUTPUT.writer",
        "Slack.command.ask",
    ],
)
def test_reserved_topics_match_any_case_and_the_bare_root(topic: str) -> None:
    assert is_reserved_topic(topic)


@pytest.mark.parametrize(
    "topic", ["orders.created", "agent.created", "agent", "invoked.x", "executions.x", "customer.invoke", "nodes"]
)
def test_a_topic_of_ones_own_is_not_reserved(topic: str) -> None:
    assert not is_reserved_topic(topic)


def test_allowed_topics_refuse_a_reserved_pattern_and_an_invalid_one() -> None:
    assert ToolConfig(name="publish_event", allowed_topics=["orders.#", "report.*"]).allowed_topics == [
        "orders.#",
        "report.*",
    ]
    with pytest.raises(ValidationError, match="reserved for agentrunner"):
        ToolConfig(name="publish_event", allowed_topics=["execution.#"])
    with pytest.raises(ValidationError, match="not valid"):
        ToolConfig(name="publish_event", allowed_topics=["orders..x"])


_WORDS = st.text(alphabet="abcXYZ09_-:", min_size=1, max_size=8)


@given(root=st.sampled_from(RESERVED_TOPIC_ROOTS), rest=st.lists(_WORDS, max_size=4), upper=st.booleans())
def test_everything_under_a_reserved_root_is_reserved(root: str, rest: list[str], upper: bool) -> None:
    topic = ".".join([root.upper() if upper else root, *rest])
    assert is_reserved_topic(topic)


@given(words=st.lists(_WORDS, min_size=1, max_size=5))
def test_a_topic_is_reserved_exactly_when_it_starts_with_a_reserved_roots_words(words: list[str]) -> None:
    lowered = [word.lower() for word in words]
    expected = any(lowered[: len(root.split("."))] == root.split(".") for root in RESERVED_TOPIC_ROOTS)
    assert is_reserved_topic(".".join(words)) is expected
