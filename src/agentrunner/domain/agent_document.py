"""Turn the text of one agent YAML file into an `AgentConfig`, or into precise errors.

Every error names the file, the line, the field path and what was expected, so the user
can fix a file without reading our code.

Agent files come from callers too (`POST /configs/validate`), so the parser is bounded: a
document is at most `MAX_AGENT_DOCUMENT_BYTES`, and anchors and aliases are refused before
anything is built. Agent files do not need them, and an alias is what turns a few hundred
bytes into a tree of billions of nodes (each nesting level multiplies the work).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import ConfigError

MAX_AGENT_DOCUMENT_BYTES = 256 * 1024
# Values (scalars, lists, mappings) in one document: a large agent file has a few hundred.
# Bounds the work of building and validating it, whatever its shape.
MAX_AGENT_DOCUMENT_NODES = 10_000


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem (or warning) in one agent file."""

    source: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class AgentDocument:
    """A successfully parsed agent file, with the warnings it raised."""

    config: AgentConfig
    source: str
    warnings: tuple[ConfigIssue, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class BrokenAgentFile:
    """A file that did not load, with the agent name it claims when one can be read."""

    source: str
    issues: tuple[ConfigIssue, ...]
    claimed_name: str | None = None


class AgentFileError(ConfigError):
    """An agent file that cannot be loaded; `issues` lists every problem found."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        summary = "; ".join(str(issue) for issue in issues)
        super().__init__(f"invalid agent file {summary}", source=source)
        self.source = source
        self.issues = tuple(issues)


class AgentFileRefusedError(AgentFileError):
    """An agent document refused before it is parsed: too big, or with anchors or aliases."""


def parse_agent_document(text: str, source: str) -> AgentDocument:
    """Parse and validate one agent file; raise `AgentFileError` listing every problem
    (a document over `MAX_AGENT_DOCUMENT_BYTES`, an anchor or alias, a YAML syntax error,
    a wrong field). CPU-bound: async callers run it in a thread."""
    node, data = load_agent_yaml(text, source)
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        issue = ConfigIssue(source, "", f"expected a mapping of agent fields at the top level, found {kind}", 1)
        raise AgentFileError(source, [issue])
    duplicates = _duplicate_keys(node, source)
    if duplicates:
        raise AgentFileError(source, duplicates)
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        issues = [_issue_from(error, source, node) for error in exc.errors()]
        raise AgentFileError(source, issues) from exc
    warnings = tuple(
        ConfigIssue(source, ".".join(path), "unknown field, ignored", _line_of(node, list(path)))
        for path in _unknown_fields(config, ())
    )
    return AgentDocument(config=config, source=source, warnings=warnings)


# libyaml when it is installed (it is, with PyYAML's wheels): ~10x faster, same marks.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_agent_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data of one agent document; raise
    `AgentFileError` when it is too big, uses an anchor or alias, or is not YAML."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_AGENT_DOCUMENT_BYTES:
        message = f"document of {size} bytes is over the limit of {MAX_AGENT_DOCUMENT_BYTES} bytes for an agent file"
        raise AgentFileRefusedError(source, [ConfigIssue(source, "", message)])
    try:
        _refuse_anchors(text, source)
        return _load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
        raise AgentFileError(source, [ConfigIssue(source, "", f"YAML syntax error: {problem}", line)]) from exc
    except yaml.YAMLError as exc:
        raise AgentFileError(source, [ConfigIssue(source, "", f"YAML error: {exc}")]) from exc


def _refuse_anchors(text: str, source: str) -> None:
    """Walk the parser's events (linear in the text: nothing is built yet) and refuse the
    first anchor or alias, naming its line, or a document of too many values."""
    loader = _Loader(text)
    try:
        nodes = 0
        while loader.check_event():
            event = loader.get_event()
            if not isinstance(event, yaml.NodeEvent):
                continue
            nodes += 1
            line = event.start_mark.line + 1 if event.start_mark else None
            if nodes > MAX_AGENT_DOCUMENT_NODES:
                message = f"more than {MAX_AGENT_DOCUMENT_NODES} values in one agent file: it is not an agent file"
                raise AgentFileRefusedError(source, [ConfigIssue(source, "", message, line)])
            if event.anchor is not None:  # an alias names one, and so does the value it repeats
                kind = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
                message = f"YAML {kind}{event.anchor}: agent files allow no anchors or aliases, write the value out"
                raise AgentFileRefusedError(source, [ConfigIssue(source, "", message, line)])
    finally:
        loader.dispose()


def _load_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """Parse once, keeping both the node tree (for line numbers) and the data."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        return node, loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def _issue_from(error: Any, source: str, node: yaml.Node | None) -> ConfigIssue:
    location = [str(part) for part in error["loc"]]
    path = ".".join(location)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "required field is missing"
    elif error["type"] == "enum":
        expected = error.get("ctx", {}).get("expected", "")
        message = f"got {error['input']!r}, expected one of {expected}"
    elif error["type"] == "string_pattern_mismatch" and location == ["name"]:
        message = (
            f"got {error['input']!r}: use lowercase letters, digits, '-' or '_' "
            "(it becomes a routing-key word, so no dots or spaces), at most 63 characters"
        )
    return ConfigIssue(source, path, message, _line_of(node, location))


def _line_of(node: yaml.Node | None, location: list[str]) -> int | None:
    """The 1-based line of the deepest YAML node that `location` reaches."""
    if node is None:
        return None
    line: int = node.start_mark.line + 1
    for part in location:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((value for key, value in node.value if key.value == part), None)
            if child is not None:
                key_node = next(key for key, value in node.value if value is child)
                line = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            child = node.value[int(part)]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _unknown_fields(model: BaseModel, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    found = [(*prefix, str(key)) for key in (model.model_extra or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found.extend(_unknown_fields(value, (*prefix, name)))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                if isinstance(child, BaseModel):
                    found.extend(_unknown_fields(child, (*prefix, name, str(index))))
    return found


def _duplicate_keys(node: yaml.Node | None, source: str, path: tuple[str, ...] = ()) -> list[ConfigIssue]:
    """YAML lets a repeated key silently replace the first: report it instead."""
    issues: list[ConfigIssue] = []
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            line = key.start_mark.line + 1
            if name in first_line:
                where = ".".join((*path, name))
                issues.append(ConfigIssue(source, where, f"duplicate key: also set at line {first_line[name]}", line))
            else:
                first_line[name] = line
            issues.extend(_duplicate_keys(value, source, (*path, name)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            issues.extend(_duplicate_keys(item, source, (*path, str(index))))
    return issues
