"""Every module under src/agentrunner is small enough to read in one sitting: none is over
500 lines but the Alembic migrations, which are generated and never read together.

A module that has grown past the limit and has an issue to split it is listed in
`KNOWN_OFFENDERS` with that issue; once it is split it must leave the list (the second test
fails on a listed module that is already under the limit), so the list cannot rot."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

MAX_LINES = 500
PACKAGE = REPO / "src" / "agentrunner"
MIGRATIONS = PACKAGE / "adapters" / "state" / "migrations"

# module path (relative to src/agentrunner) -> why it is over the limit for now.
KNOWN_OFFENDERS: dict[str, str] = {}


def _modules() -> dict[str, int]:
    """Each module's path relative to the package, with its number of lines."""
    return {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(PACKAGE.rglob("*.py"))
        if not path.is_relative_to(MIGRATIONS)
    }


def test_no_module_is_over_the_line_limit() -> None:
    over = {name: lines for name, lines in _modules().items() if lines > MAX_LINES and name not in KNOWN_OFFENDERS}

    assert not over, f"modules over {MAX_LINES} lines (split them along their responsibilities): {over}"


@pytest.mark.parametrize("name", sorted(KNOWN_OFFENDERS))
def test_a_known_offender_is_still_over_the_limit(name: str) -> None:
    lines = _modules().get(name)

    assert lines is not None, f"{name} is gone: remove it from KNOWN_OFFENDERS"
    assert lines > MAX_LINES, f"{name} has {lines} lines now: remove it from KNOWN_OFFENDERS"


def test_the_migrations_are_the_only_modules_left_out() -> None:
    # Guards the exclusion itself: a moved migrations folder would otherwise drop out silently
    # and let everything under a wrong path pass.
    assert any(MIGRATIONS.rglob("0001_*.py"))
    assert len(_modules()) > 100
