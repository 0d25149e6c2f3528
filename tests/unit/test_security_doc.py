"""docs/security.md names the tests that verify each default: every `file::test` it names
exists, so a renamed test cannot leave the page pointing at nothing."""

from __future__ import annotations

import re

from tests.conftest import REPO

DOC = REPO / "docs" / "security.md"
# `tests/x.py::name`, or `::name` meaning the file named last before it.
_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(::\w+)?`")


def _named_tests() -> list[tuple[str, str]]:
    named: list[tuple[str, str]] = []
    current = ""
    for match in _REFERENCE.finditer(DOC.read_text()):
        current = match[1] or current
        if match[2]:
            named.append((current, match[2][2:]))
    return named


def test_every_test_the_security_page_names_exists() -> None:
    named = _named_tests()

    missing = [
        f"{path}::{name}"
        for path, name in named
        if not (REPO / path).is_file() or not re.search(rf"^(async )?def {name}\(", (REPO / path).read_text(), re.M)
    ]

    assert len(named) >= 10
    assert missing == []


def test_the_readme_links_the_security_page() -> None:
    assert "(docs/security.md)" in (REPO / "README.md").read_text()
