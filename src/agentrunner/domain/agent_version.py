"""Versions of an agent: each new content of an agent file the registry loads is one version.

A version is numbered per agent (1, 2, ... in the order the contents were first seen) and
identified by the hash of the loaded config. What is kept of it is what `GET /agents/{name}`
may show: the config with every secret masked (`domain/redaction.py`) and each tool entry
reduced to its name, type and description (a tool's URL, command or environment tells
where internal services are: only an admin reads those, on the live agent). The changes to
the previous version are field-level: one entry per changed field, by its dotted path, with
its values masked the same way (a changed tool definition shows which field changed, not its
values).
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import yaml

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.redaction import MASK, is_secret_name, masked

# Fields of a tool entry anyone who sees the agent may read (api/views.py `tool_view`).
_PUBLIC_TOOL_FIELDS = ("name", "type", "description")
# A version number in a path: bounded so a hostile value is refused before any query.
MAX_VERSION = 2**31 - 1


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that differs from the previous version: its dotted path and both values
    (None where the field is absent on that side)."""

    field: str
    before: Any
    after: Any

    def as_json(self) -> dict[str, Any]:
        """The change as stored and shown."""
        return {"field": self.field, "before": self.before, "after": self.after}


# libyaml's emitter when it is installed (it is, with PyYAML's wheels): the same text, 4x
# faster than the pure-Python one.
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass(frozen=True, slots=True)
class LoadedContent:
    """An agent's config as loaded now, ready to be recorded as a version: its hash, the
    text kept and the (masked) document the next version is compared with, and the whole
    config (never shown: what work pinned to this version runs on after a reload)."""

    agent: str
    content_hash: str
    document: dict[str, Any]
    config: dict[str, Any]

    @property
    def text(self) -> str:
        """The document as YAML, written when a version is recorded: every process loads
        every agent at start, and dumping 1,000 of them took seconds of it (with libyaml's
        emitter, a quarter of that: a new version of each agent is still one dump each)."""
        return yaml.dump(self.document, Dumper=_Dumper, sort_keys=True, allow_unicode=True)


@dataclass(frozen=True, slots=True)
class AgentVersion:
    """One recorded version of an agent (see the module docstring)."""

    agent: str
    version: int
    content_hash: str
    created_at: datetime
    text: str
    changes: list[FieldChange]
    # The whole config it ran (never shown): parsed again for work pinned to it.
    config: dict[str, Any]


def loaded_content(config: AgentConfig) -> LoadedContent:
    """What is recorded of `config`: the hash covers the whole config (a changed secret or
    tool URL is a new version) but no field at its default, so that a field a new release
    adds is not a new version of every agent; the text and document only what may be shown."""
    whole = config.model_dump(mode="json")
    written = config.model_dump(mode="json", exclude_defaults=True)
    content_hash = hashlib.sha256(orjson.dumps(written, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return LoadedContent(config.name, content_hash, shown_document(whole), whole)


def shown_document(config: dict[str, Any]) -> dict[str, Any]:
    """A dumped config as a version keeps it: secrets masked, each tool entry reduced to
    its public fields, the fields of a tool's definition kept as a masked value each (so a
    change to one shows in the diff without its value)."""
    document: dict[str, Any] = masked(config)
    tools = []
    for tool in config.get("tools") or []:
        entry = {key: tool.get(key) for key in _PUBLIC_TOOL_FIELDS}
        entry["definition"] = {key: MASK for key, value in tool.items() if key not in _PUBLIC_TOOL_FIELDS and value}
        entry["definition_hash"] = hashlib.sha256(orjson.dumps(tool, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
        tools.append(entry)
    document["tools"] = tools
    return document


def field_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> list[FieldChange]:
    """The fields that differ between two shown documents, by dotted path, in path order
    (a list is compared whole, except tools, compared by name). The first version has no
    previous one: no changes."""
    if before is None:
        return []
    changes: list[FieldChange] = []
    _compare("", _keyed_tools(before), _keyed_tools(after), changes)
    return changes


def text_diff(previous: AgentVersion, version: AgentVersion) -> str:
    """The unified line diff of `previous`'s text to `version`'s (both masked already)."""
    lines = difflib.unified_diff(
        previous.text.splitlines(keepends=True),
        version.text.splitlines(keepends=True),
        fromfile=f"{previous.agent} v{previous.version}",
        tofile=f"{version.agent} v{version.version}",
    )
    return "".join(lines)


def _keyed_tools(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with its tools as a mapping by name, so a tool's change is one path."""
    tools = {str(tool.get("name")): tool for tool in document.get("tools") or []}
    return {**document, "tools": tools}


def _compare(prefix: str, before: Any, after: Any, changes: list[FieldChange]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            _compare(path, before.get(key), after.get(key), changes)
        return
    if before != after:
        hidden = is_secret_name(prefix.rsplit(".", 1)[-1])
        changes.append(FieldChange(prefix, MASK if hidden and before else before, MASK if hidden and after else after))
