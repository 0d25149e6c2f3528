"""`POST /configs/validate` reads the schema file a sent document's `output_schema` names
(issue 24), as a load does, and any tenant may send one: a reference may not reach outside
the agents directory (`..`, an absolute path, a symlink), nor read a file over 64 KiB or
with YAML aliases, and no answer shows a file's content, the server's paths or its errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrunner.adapters.config.files import MAX_SCHEMA_FILE_BYTES
from agentrunner.node import Node
from tests.integration.conftest import node_on
from tests.security.conftest import TEAM_A_KEY

SECRET = "sk-live-schema-secret-5b7e"
# Beside the agent files (a schema folder, a secret-holding file the caller may not read) and
# outside them (what a symlink or `..` would reach).
AGENT = "name: typed\nagent_type: t\nexecution_mode: autonomous\nllm_config: {provider: echo, model: echo}\n"


def _document(reference: str) -> str:
    return AGENT + f"output_schema: '{reference}'\n"


@pytest.fixture
async def validate(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    agents = tmp_path / "agents"
    schemas = agents / "schemas"
    schemas.mkdir(parents=True)
    (schemas / "answer.json").write_text('{"type": "object", "required": ["title"]}')
    (schemas / "wrong.json").write_text(f'{{"type": "{SECRET}"}}')  # not a JSON Schema: says the value
    (schemas / "broken.yaml").write_text(f"title: [{SECRET}\n")
    (schemas / "big.json").write_text('{"description": "' + "x" * MAX_SCHEMA_FILE_BYTES + '"}')
    (schemas / "bomb.yaml").write_text('a: &a ["x", "x"]\nb: &b [*a, *a]\nc: [*b, *b]\n')
    (tmp_path / "outside.json").write_text(f'{{"type": "object", "title": "{SECRET}"}}')
    (schemas / "link.json").symlink_to(tmp_path / "outside.json")
    settings: dict[str, Any] = {"enable_api_auth": True, "api_keys": f"team-a:{TEAM_A_KEY}"}
    async with node_on("memory", tmp_path, {}, **settings) as node, _client(node) as http:
        yield http, tmp_path


def _client(node: Node) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=node.apps()["config"]),
        base_url="http://config",
        headers={"X-API-Key": TEAM_A_KEY, "content-type": "application/yaml"},
    )


async def test_a_schema_file_inside_the_agents_directory_is_read_and_checked(
    validate: tuple[httpx.AsyncClient, Path],
) -> None:
    http, _ = validate
    good = await http.post("/configs/validate", content=_document("schemas/answer.json"))
    missing = await http.post("/configs/validate", content=_document("schemas/missing.json"))

    assert (good.status_code, good.json()["valid"], good.json()["errors"]) == (200, True, [])
    assert missing.json()["valid"] is False
    [error] = missing.json()["errors"]
    assert (error["path"], error["message"]) == (
        "output_schema",
        "schema file 'schemas/missing.json' cannot be read (is it there?)",
    )


# Each reference a load refuses, and what the refusal says (one node for all: a start each
# would cost seconds).
REFUSED = [
    ("../outside.json", "must be a path relative to the agent file"),
    ("schemas/../../outside.json", "must be a path relative to the agent file"),
    ("/etc/passwd", "must be a path relative to the agent file"),
    ("schemas/link.json", "is outside the agents directory"),
    ("schemas/big.json", f"is over the limit of {MAX_SCHEMA_FILE_BYTES} bytes"),
    ("schemas/bomb.yaml", "refused: it uses YAML anchors or aliases"),
    ("schemas/wrong.json", "is not a valid JSON Schema"),
    ("schemas/broken.yaml", "is not JSON or YAML"),
]


async def test_a_reference_a_load_refuses_is_refused_without_saying_what_the_server_holds(
    validate: tuple[httpx.AsyncClient, Path],
) -> None:
    http, root = validate
    for reference, refusal in REFUSED:
        response = await http.post("/configs/validate", content=_document(reference))

        assert response.status_code == 200, (reference, response.text)
        errors = response.json()["errors"]
        assert response.json()["valid"] is False, reference
        # A path of the wrong form is refused by the parse, which says so of each form allowed.
        assert all(error["path"].startswith("output_schema") for error in errors), (reference, errors)
        assert any(refusal in error["message"] for error in errors), (reference, errors)
        for leak in (SECRET, str(root), "Errno"):
            assert leak not in response.text, (reference, leak)
