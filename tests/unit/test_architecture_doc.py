"""docs/architecture.md names real places: every file or folder it names in backticks exists,
so a module moved or renamed without the map fails here instead of misleading the next reader."""

from __future__ import annotations

import itertools
import re

from tests.conftest import REPO

DOC = REPO / "docs" / "architecture.md"
PACKAGE = REPO / "src" / "agentrunner"
# Named relative to the repository; every other path is relative to src/agentrunner, where a
# path that does not start at its top (`bus/memory.py`, in the row of the adapters' room) may
# stand in any folder.
REPO_ROOTS = ("tests/", "docs/", "scripts/", "src/")

# Places the doc names before the code has them (a reshaping in flight on a branch: list
# them here at the doc's commit, empty it at the merge). A listed path that already exists
# fails the second test, so the list cannot rot.
AWAITING_MERGE: set[str] = set()


def _named_paths() -> set[str]:
    """The paths in the doc's inline code spans (fenced blocks left out), braces expanded
    (`bus/{memory,rabbitmq}.py`), placeholders (`api/<role>.py`) left out."""
    prose = re.sub(r"```.*?```", "", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    found: set[str] = set()
    for span in re.findall(r"`([^`\s]+)`", prose):
        if "<" in span or span.startswith("/") or not (span.endswith((".py", "/", ".md")) or "/" in span):
            continue
        if "." not in span.rsplit("/", 1)[-1] and not span.endswith("/"):
            continue  # a route or a topic, not a file
        found.update(_expanded(span))
    return found


def _expanded(span: str) -> list[str]:
    match = re.search(r"\{([^}]*)\}", span)
    if match is None:
        return [span]
    return list(
        itertools.chain.from_iterable(
            _expanded(span[: match.start()] + choice + span[match.end() :]) for choice in match.group(1).split(",")
        )
    )


def _exists(path: str) -> bool:
    if path.startswith(REPO_ROOTS):
        return any(REPO.glob(path.rstrip("/")))
    if (PACKAGE / path.split("/", maxsplit=1)[0]).exists():
        return (PACKAGE / path).exists()
    return any(PACKAGE.rglob(path.rstrip("/")))


def test_every_path_the_architecture_doc_names_exists() -> None:
    named = _named_paths()
    assert len(named) > 40, "the scan finds the doc's paths"

    missing = sorted(path for path in named - AWAITING_MERGE if not _exists(path))

    assert missing == [], "docs/architecture.md names places that are not there: fix the doc or the code"


def test_a_path_awaiting_the_merge_is_still_missing() -> None:
    there = sorted(path for path in AWAITING_MERGE if _exists(path))

    assert there == [], "these exist now: remove them from AWAITING_MERGE"
