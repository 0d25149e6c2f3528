"""A node's role apps are built when first read, once each (`node.apps.RoleApps`)."""

from __future__ import annotations

from collections import Counter

from fastapi import FastAPI

from agentrunner.node.apps import RoleApps


def test_an_app_is_built_when_first_read_and_kept() -> None:
    built: Counter[str] = Counter()

    def builder(role: str) -> FastAPI:
        built[role] += 1
        return FastAPI(title=role)

    apps = RoleApps({"orchestrator": lambda: builder("orchestrator"), "state": lambda: builder("state")})

    assert sorted(apps) == ["orchestrator", "state"]
    assert len(apps) == 2
    assert not built  # listing the roles builds nothing
    orchestrator = apps["orchestrator"]
    assert orchestrator.title == "orchestrator"
    assert apps["orchestrator"] is orchestrator
    assert built == Counter({"orchestrator": 1})
    assert {role: app.title for role, app in apps.items()} == {"orchestrator": "orchestrator", "state": "state"}
    assert built == Counter({"orchestrator": 1, "state": 1})
