"""Write docs/api.md, the API reference, from the OpenAPI of every role's app.

    python scripts/api_docs.py          # rewrite docs/api.md
    python scripts/api_docs.py --check  # exit 1 when docs/api.md is out of date

The apps are built as `agentrunner up` builds them (nothing is started or connected), so
the reference is exactly what each role serves at /openapi.json. tests/unit/test_api_reference.py
fails when the committed file differs from what this writes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / "docs" / "api.md"
ROLE_PORTS = {"state": 8001, "config": 8002, "orchestrator": 8003, "scheduler": 8004, "slack": 8005}
METHODS = ("get", "put", "post", "patch", "delete")
_ERROR_REF = "#/components/schemas/ErrorAnswer"


def role_schemas() -> dict[str, dict[str, Any]]:
    """Each HTTP role's OpenAPI document, from an unstarted embedded node."""
    from agentrunner.node import Node  # noqa: PLC0415 - the script must run with the package installed
    from agentrunner.settings import Settings  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(_env_file=None, data_dir=Path(scratch), agents_dir=Path(scratch))  # type: ignore[call-arg]
        node = Node(settings)
        return {role: app.openapi() for role, app in node.apps().items()}


def _type(schema: dict[str, Any]) -> str:
    """A short human form of a JSON schema: `string`, `integer`, `Execution`, `list[Step]`, ..."""
    if "$ref" in schema:
        return f"[{schema['$ref'].rsplit('/', 1)[-1]}](#{schema['$ref'].rsplit('/', 1)[-1].lower()})"
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            return " \\| ".join(_type(option) for option in schema[combinator])
    kind = schema.get("type")
    if kind == "array":
        return f"list[{_type(schema.get('items', {}))}]"
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return f"map[{_type(schema['additionalProperties'])}]"
    if kind == "null":
        return "null"
    return str(kind or "any")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _operation(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"#### `{method.upper()} {path}`", ""]
    if operation.get("summary"):
        lines += [operation["summary"] + ".", ""]
    if operation.get("description"):
        lines += [" ".join(operation["description"].split()), ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | required | meaning |", "|---|---|---|---|---|"]
        for parameter in parameters:
            lines.append(
                f"| `{parameter['name']}` | {parameter['in']} | {_type(parameter.get('schema', {}))} | "
                f"{'yes' if parameter.get('required') else 'no'} | {_cell(parameter.get('description', ''))} |"
            )
        lines.append("")
    body = operation.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            schema = content.get("schema", {})
            lines.append(f"Body (`{media}`): {_type(schema)}")
            for name, field in schema.get("properties", {}).items():
                required = " (required)" if name in schema.get("required", []) else ""
                lines.append(f"- `{name}`: {_type(field)}{required}")
        lines.append("")
    lines += ["| status | meaning | body |", "|---|---|---|"]
    errors = []
    for status, response in operation.get("responses", {}).items():
        contents = response.get("content", {})
        if [c.get("schema", {}).get("$ref", "") for c in contents.values()] == [_ERROR_REF]:
            errors.append(status)
            continue
        shape = ", ".join(f"{_type(c.get('schema', {}))} (`{m}`)" for m, c in contents.items()) or "(none)"
        lines.append(f"| {status} | {_cell(response.get('description', ''))} | {shape} |")
    if errors:
        lines.append(
            f"| {', '.join(sorted(errors))} | errors (see [the statuses](#errors)) | [ErrorAnswer](#erroranswer) |"
        )
    return [*lines, ""]


def _errors(schemas: dict[str, dict[str, Any]]) -> list[str]:
    """Each error status with its meaning, once (every role documents the same ones)."""
    meanings: dict[str, str] = {}
    for schema in schemas.values():
        for item in schema["paths"].values():
            for method in METHODS:
                for status, response in item.get(method, {}).get("responses", {}).items():
                    refs = [c.get("schema", {}).get("$ref") for c in response.get("content", {}).values()]
                    if refs == [_ERROR_REF]:
                        meanings.setdefault(status, response.get("description", ""))
    lines = ["## Errors", "", "| status | meaning |", "|---|---|"]
    lines += [f"| {status} | {_cell(meanings[status])} |" for status in sorted(meanings)]
    return [*lines, ""]


def _schemas(components: dict[str, Any]) -> list[str]:
    lines = []
    for name in sorted(components):
        schema = components[name]
        lines += [f"#### {name}", ""]
        if schema.get("description"):
            lines += [" ".join(schema["description"].split()), ""]
        properties = schema.get("properties", {})
        if properties:
            lines += ["| field | type | required | meaning |", "|---|---|---|---|"]
            for field, spec in properties.items():
                required = "yes" if field in schema.get("required", []) else "no"
                lines.append(f"| `{field}` | {_type(spec)} | {required} | {_cell(spec.get('description', '') or '')} |")
        elif "enum" in schema:
            lines.append(f"One of {_type(schema)}.")
        lines.append("")
    return lines


def render(schemas: dict[str, dict[str, Any]]) -> str:
    """The whole reference, in Markdown."""
    lines = [
        "# API reference",
        "",
        "<!-- Generated by scripts/api_docs.py from each role's OpenAPI: do not edit by hand. -->",
        "",
        "Every role also serves its OpenAPI at `/openapi.json` and an interactive page at `/docs`.",
        "With `ENABLE_API_AUTH=true`, every path except `/health/*` (and the Slack routes, which",
        "check Slack's signature) needs `X-API-Key: <key>` or `Authorization: Bearer <key>`.",
        "With it off, a POST/PUT/PATCH/DELETE with a non-JSON body or an `Origin` header needs",
        "`X-AgentRunner-Client: <anything>` (403 `cross_site_refused` otherwise).",
        'Errors share one shape: `{"error": {"code", "message", "trace_id"}}` ([ErrorAnswer](#erroranswer)).',
        "Every role also answers `GET /metrics` (Prometheus text format, see the README).",
        "",
        "| role | port | operations |",
        "|---|---|---|",
    ]
    for role, schema in schemas.items():
        count = sum(1 for item in schema["paths"].values() for method in item if method in METHODS)
        lines.append(f"| [{role}](#{role}) | {ROLE_PORTS[role]} | {count} |")
    lines += ["", *_errors(schemas)]
    components: dict[str, Any] = {}
    for role, schema in schemas.items():
        lines += [f"## {role}", "", f"{schema['info']['title']}, port {ROLE_PORTS[role]}.", ""]
        for path, item in schema["paths"].items():
            for method in METHODS:
                if method in item:
                    lines += _operation(path, method, item[method])
        components.update(schema.get("components", {}).get("schemas", {}))
    lines += ["## Schemas", "", *_schemas(components)]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    text = render(role_schemas())
    if "--check" in sys.argv[1:]:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python scripts/api_docs.py")  # noqa: T201
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
