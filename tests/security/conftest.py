"""The attacker's suite: two tenants and an admin against the running platform.

Every test here plays a caller that should not get what it asks for, and is marked
`security` (run with `pytest -m security`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.blocking import no_blocking_calls

# Keys of 32+ characters, as the platform requires with ENABLE_API_AUTH=true.
TEAM_A_KEY = "team-a-key-0123456789abcdef0123456789"
TEAM_B_KEY = "team-b-key-0123456789abcdef0123456789"
ADMIN_KEY = "admin-key-0123456789abcdef0123456789ab"

# The environment of a platform with two tenants and one admin.
TENANTS_ENV = {
    "ENABLE_API_AUTH": "true",
    "API_KEYS": f"team-a:{TEAM_A_KEY},team-b:{TEAM_B_KEY}",
    "ADMIN_API_KEYS": f"ops:{ADMIN_KEY}",
}


@pytest.fixture(autouse=True)
def _no_blocking_calls() -> Iterator[None]:
    """Fails a test whose agentrunner code blocks the event loop (tests/blocking.py): the
    nodes these tests run in their own process."""
    with no_blocking_calls():
        yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/security/" in str(item.path):
            item.add_marker(pytest.mark.security)
