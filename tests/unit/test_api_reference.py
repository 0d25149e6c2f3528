"""docs/api.md is the API every role serves: regenerated from the apps' OpenAPI, it is what
is committed (run `python scripts/api_docs.py` after changing a route)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.conftest import REPO


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("api_docs", REPO / "scripts" / "api_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_api_reference_matches_every_roles_openapi() -> None:
    generator = _generator()
    schemas = generator.role_schemas()

    expected = generator.render(schemas)

    assert set(schemas) == {"state", "config", "orchestrator", "scheduler", "slack"}
    assert (REPO / "docs" / "api.md").read_text() == expected, "docs/api.md is stale: run python scripts/api_docs.py"


def test_every_operation_of_every_role_has_its_section() -> None:
    generator = _generator()
    text = (REPO / "docs" / "api.md").read_text()

    for schema in generator.role_schemas().values():
        for path, item in schema["paths"].items():
            for method in item:
                assert f"#### `{method.upper()} {path}`" in text
