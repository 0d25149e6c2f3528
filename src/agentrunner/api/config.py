"""Config role (8002): the agent definitions as loaded, secrets masked, and validation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel

from agentrunner.api.edge import EdgeConfig, role_app
from agentrunner.api.views import config_view
from agentrunner.domain.agent_document import (
    MAX_AGENT_DOCUMENT_BYTES,
    AgentDocument,
    AgentFileError,
    AgentFileRefusedError,
    ConfigIssue,
    parse_agent_document,
)
from agentrunner.domain.audit import AuditAction
from agentrunner.domain.errors import ConfigError, PayloadTooLargeError
from agentrunner.runtime.audit import Auditor
from agentrunner.runtime.ownership import require_admin
from agentrunner.runtime.registry import AgentRegistry


class ConfigSummary(BaseModel):
    """One agent file in `GET /configs`."""

    name: str
    source: str
    status: str
    reasons: list[str]


class IssueView(BaseModel):
    """One problem in an agent file."""

    path: str
    line: int | None
    message: str


class ValidationResult(BaseModel):
    """Answer of `POST /configs/validate`."""

    valid: bool
    name: str | None
    errors: list[IssueView]
    warnings: list[IssueView]


def _issue(issue: ConfigIssue) -> IssueView:
    return IssueView(path=issue.path, line=issue.line, message=issue.message)


def config_app(
    registry: AgentRegistry,
    edge: EdgeConfig,
    reload: Callable[[], Awaitable[None]],
    audit: Auditor | None = None,
    schema_files: Callable[[AgentDocument], AgentDocument] | None = None,
) -> FastAPI:
    """The config service's HTTP API; a reload is recorded in `audit`. `schema_files` reads
    the schema file a validated document's `output_schema` names, as a load does (blocking:
    called off the event loop); without it the reference is only checked for its form."""
    app = role_app("config", "agentrunner config", edge)
    auditor = audit or Auditor(None)

    @app.get("/configs", response_model=list[ConfigSummary], tags=["configs"])
    async def list_configs() -> list[ConfigSummary]:
        return [
            ConfigSummary(name=agent.name, source=agent.source, status=agent.status.value, reasons=list(agent.reasons))
            for agent in registry.agents.values()
        ]

    @app.get("/configs/{name}", tags=["configs"], summary="An agent's whole config, secrets masked")
    async def get_config(name: str) -> dict[str, Any]:
        agent = registry.get(name)
        body: dict[str, Any] = {"name": agent.name, "source": agent.source, "status": agent.status.value}
        body["config"] = config_view(agent.config) if agent.config else None
        body["reasons"] = list(agent.reasons)
        return body

    @app.post(
        "/configs/reload",
        response_model=list[ConfigSummary],
        tags=["configs"],
        summary="Load the agent files again and apply them on every node",
    )
    async def reload_configs() -> list[ConfigSummary]:
        require_admin("POST /configs/reload")
        await reload()
        loaded = await list_configs()
        failed = sorted(agent.name for agent in loaded if agent.reasons)
        await auditor.record(AuditAction.CONFIG_RELOAD, "agents", agents=len(loaded), not_runnable=failed)
        return loaded

    @app.post(
        "/configs/validate",
        response_model=ValidationResult,
        tags=["configs"],
        summary="Validate an agent YAML document sent as the request body",
        description="At most 256 KiB (413 payload_too_large). Anchors and aliases are refused "
        "(422 config_invalid, naming the line); other problems answer 200 with valid: false. "
        "A schema file `output_schema` names is read from the agents directory, relative to its top, "
        "with the refusals of a load (outside the directory, over 64 KiB, anchors or aliases).",
        openapi_extra={"requestBody": {"content": {"application/yaml": {"schema": {"type": "string"}}}}},
    )
    async def validate(request: Request) -> ValidationResult:
        text = (await _bounded_body(request)).decode("utf-8", errors="replace")
        try:
            # Off the event loop: a big (bounded) document must not stall this process's roles.
            document = await asyncio.to_thread(_checked, text, schema_files)
        except AgentFileRefusedError as exc:  # not parsed at all: refused, not "invalid"
            raise ConfigError(exc.message) from exc
        except AgentFileError as exc:
            return ValidationResult(valid=False, name=None, errors=[_issue(i) for i in exc.issues], warnings=[])
        return ValidationResult(
            valid=True, name=document.config.name, errors=[], warnings=[_issue(w) for w in document.warnings]
        )

    return app


def _checked(text: str, schema_files: Callable[[AgentDocument], AgentDocument] | None) -> AgentDocument:
    """The sent document, parsed, with the schema file it names read (`schema_files`)."""
    document = parse_agent_document(text, "request body")
    return schema_files(document) if schema_files is not None else document


async def _bounded_body(request: Request) -> bytes:
    """The body, read only up to `MAX_AGENT_DOCUMENT_BYTES`; 413 past it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_AGENT_DOCUMENT_BYTES:
        raise _too_large(int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_AGENT_DOCUMENT_BYTES:
            raise _too_large(len(body))
    return bytes(body)


def _too_large(size: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"agent document of {size}+ bytes is over the limit of {MAX_AGENT_DOCUMENT_BYTES} bytes "
        f"({MAX_AGENT_DOCUMENT_BYTES // 1024} KiB) for POST /configs/validate"
    )
