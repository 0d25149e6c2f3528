"""Read eval files (`<name>.yml` in the evals directory, domain/eval_suite.py).

A suite is read when a run of it starts, not watched: a run uses the file as it is then,
and a run under way keeps the cases it started with.
"""

from __future__ import annotations

import re
from pathlib import Path

from agentrunner.domain.agent_document import MAX_AGENT_DOCUMENT_BYTES, ConfigIssue
from agentrunner.domain.errors import EvalSuiteNotFoundError
from agentrunner.domain.eval_suite import SUITE_NAME_PATTERN, EvalFileError, EvalSuite, parse_eval_document

EVAL_FILE_SUFFIXES = (".yml", ".yaml")


class EvalFiles:
    """The eval files of one directory: `EvalSuites` (ports/evals.py)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def names(self) -> list[str]:
        """The suites the directory holds, by name (none when it does not exist)."""
        if not self.directory.is_dir():
            return []
        return sorted(
            path.stem
            for path in self.directory.iterdir()
            if path.suffix in EVAL_FILE_SUFFIXES and path.is_file() and re.match(SUITE_NAME_PATTERN, path.stem)
        )

    def load(self, name: str) -> EvalSuite:
        """The suite `name`; raise `EvalSuiteNotFoundError` when no file has that name (or
        the name could not be one), `EvalFileError` when the file is refused or invalid."""
        if not re.match(SUITE_NAME_PATTERN, name):
            raise self._missing(name)
        path = next(
            (
                self.directory / f"{name}{suffix}"
                for suffix in EVAL_FILE_SUFFIXES
                if (self.directory / f"{name}{suffix}").is_file()
            ),
            None,
        )
        if path is None:
            raise self._missing(name)
        source = str(path)
        try:
            size = path.stat().st_size
            if size > MAX_AGENT_DOCUMENT_BYTES:  # not even read
                message = f"file of {size} bytes is over the limit of {MAX_AGENT_DOCUMENT_BYTES} bytes for an eval file"
                raise EvalFileError(source, [ConfigIssue(source, "", message)])
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EvalFileError(source, [ConfigIssue(source, "", f"cannot read file: {exc}")]) from exc
        return parse_eval_document(text, source, name)

    def _missing(self, name: str) -> EvalSuiteNotFoundError:
        known = ", ".join(self.names()) or "none"
        return EvalSuiteNotFoundError(
            f"no eval file {name!r} in {self.directory} (suites: {known}): write {name}.yml there",
            suite=name,
        )
