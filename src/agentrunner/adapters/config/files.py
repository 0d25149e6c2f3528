"""Load every agent YAML file of a directory; one bad file never stops the others."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from agentrunner.domain.agent_document import (
    MAX_AGENT_DOCUMENT_BYTES,
    AgentDocument,
    AgentFileError,
    AgentFileRefusedError,
    BrokenAgentFile,
    ConfigIssue,
    load_agent_yaml,
    parse_agent_document,
)
from agentrunner.domain.structured_output import schema_problem

AGENT_FILE_SUFFIXES = (".yml", ".yaml")
# A schema file an agent's `output_schema` names: JSON or YAML, read with the agent files'
# bounded parser, and at most this big.
MAX_SCHEMA_FILE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class AgentDirectory:
    """What a directory of agent files holds: good documents and broken files."""

    documents: list[AgentDocument] = field(default_factory=list)
    broken: list[BrokenAgentFile] = field(default_factory=list)

    @property
    def issues(self) -> list[ConfigIssue]:
        """Every problem of every broken file."""
        return [issue for broken in self.broken for issue in broken.issues]


def _claimed_name(text: str, source: str) -> str | None:
    try:
        _, data = load_agent_yaml(text, source)  # the same bounded parser: no alias bombs
    except AgentFileError:
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def _name_line(text: str) -> int | None:
    match = re.search(r"^name\s*:", text, flags=re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else None


def load_agent_directory(directory: Path) -> AgentDirectory:
    """Parse `*.yml` and `*.yaml` in `directory` (sorted by file name; not recursive).

    A missing directory is one issue, not an exception. When two files define the same
    agent name, the first file (by name) wins and the second is reported.
    """
    result = AgentDirectory()
    if not directory.is_dir():
        issue = ConfigIssue(str(directory), "", "agents directory not found: create it or set AGENTS_DIR")
        result.broken.append(BrokenAgentFile(str(directory), (issue,)))
        return result
    seen: dict[str, str] = {}
    paths = sorted(p for p in directory.iterdir() if p.suffix in AGENT_FILE_SUFFIXES and p.is_file())
    for path in paths:
        source = str(path)
        try:
            size = path.stat().st_size
            if size > MAX_AGENT_DOCUMENT_BYTES:  # not even read
                message = (
                    f"file of {size} bytes is over the limit of {MAX_AGENT_DOCUMENT_BYTES} bytes for an agent file"
                )
                result.broken.append(BrokenAgentFile(source, (ConfigIssue(source, "", message),)))
                continue
            text = path.read_text(encoding="utf-8")
            document = with_schema_file(parse_agent_document(text, source), directory)
        except AgentFileError as exc:
            result.broken.append(BrokenAgentFile(source, exc.issues, _claimed_name(text, source)))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            result.broken.append(BrokenAgentFile(source, (ConfigIssue(source, "", f"cannot read file: {exc}"),)))
            continue
        name = document.config.name
        if name in seen:
            issue = ConfigIssue(
                source, "name", f"duplicate agent name {name!r}: already defined in {seen[name]}", _name_line(text)
            )
            result.broken.append(BrokenAgentFile(source, (issue,)))
            continue
        seen[name] = source
        result.documents.append(document)
    return result


def with_schema_file(
    document: AgentDocument, directory: Path, *, base: Path | None = None, detailed: bool = True
) -> AgentDocument:
    """`document` with its `output_schema` file reference (relative to `base`, by default the
    folder of the agent file) replaced by the schema the file holds; raise `AgentFileError`
    (at `output_schema`) for a file outside `directory` (after symlinks), missing, over
    `MAX_SCHEMA_FILE_BYTES`, with YAML anchors or aliases, not JSON or YAML, or not a JSON
    Schema. Not `detailed`, a refusal says what is wrong without the file's content, the
    server's paths or the system's error (for a caller who may not read the files)."""
    reference = document.config.output_schema
    if not isinstance(reference, str):
        return document
    source = document.source

    def refused(message: str, public: str | None = None) -> AgentFileError:
        said = message if detailed or public is None else f"schema file {reference!r} {public}"
        return AgentFileError(source, [ConfigIssue(source, "output_schema", said)])

    root = directory.resolve()
    path = ((base if base is not None else Path(source).parent) / reference).resolve()
    if not path.is_relative_to(root):
        outside = "is outside the agents directory"
        raise refused(f"schema file {reference!r} {outside} {str(directory)!r}", outside)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise refused(f"schema file {reference!r} is not a file")
        if size > MAX_SCHEMA_FILE_BYTES:
            raise refused(
                f"schema file {reference!r} is {size} bytes, over the limit of {MAX_SCHEMA_FILE_BYTES}",
                f"is over the limit of {MAX_SCHEMA_FILE_BYTES} bytes",
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise refused(f"cannot read schema file {reference!r}: {exc}", "cannot be read (is it there?)") from exc
    try:
        _, schema = load_agent_yaml(text, str(path))  # JSON is YAML: one bounded parser for both
    except AgentFileRefusedError as exc:
        raise refused(
            f"schema file {reference!r} refused: {exc.issues[0].message}",
            "refused: it uses YAML anchors or aliases, or has too many values",
        ) from exc
    except AgentFileError as exc:
        message = exc.issues[0].message
        raise refused(f"schema file {reference!r} is not JSON or YAML: {message}", "is not JSON or YAML") from exc
    if not isinstance(schema, dict):
        raise refused(f"schema file {reference!r} holds no mapping: a JSON Schema is an object")
    problem = schema_problem(schema)
    if problem:
        raise refused(f"schema file {reference!r}: {problem}", "is not a valid JSON Schema")
    config = document.config.model_copy(update={"output_schema": schema})
    return AgentDocument(config=config, source=source, warnings=document.warnings)


def with_sent_schema_file(document: AgentDocument, directory: Path) -> AgentDocument:
    """`with_schema_file` for a document sent to `POST /configs/validate`, which any caller
    may send: its reference is read as if the document were a file at the top of
    `directory`, with the same refusals as a load, said without details."""
    return with_schema_file(document, directory, base=directory, detailed=False)
