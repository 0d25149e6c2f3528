"""The orchestrator's agents over A2A (the Agent2Agent protocol, through the `a2a-sdk`):
an agent card per agent, the list of them, and JSON-RPC per agent, whose tasks are
executions (api/a2a_tasks.py). Only agents whose file says `expose: {a2a: true}` (the
default) are served; the others answer 404 as an unknown agent does.

The same API keys as REST guard every path, cards included (the card says so in its
security schemes). The JSON-RPC endpoint takes the methods of A2A 1.0 (`SendMessage`,
`SendStreamingMessage`, `GetTask`, `CancelTask`, with the `A2A-Version: 1.0` header) and
those of 0.3 (`message/send`, `message/stream`, `tasks/get`, `tasks/cancel`), the SDK's
own dispatcher turning them into calls of the request handler."""

from __future__ import annotations

from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    APIKeySecurityScheme,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PROTOCOL_VERSION_0_3, PROTOCOL_VERSION_1_0
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import Request as StarletteRequest

from agentrunner.api.a2a_tasks import ExecutionTasks
from agentrunner.api.limits import InputLimits
from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import AgentNotFoundError
from agentrunner.runtime.orchestrator import Orchestrator

JSONRPC = "JSONRPC"
API_KEY_SCHEME = "apiKey"
BEARER_SCHEME = "bearer"


class _AgentOfUrl(DefaultServerCallContextBuilder):
    """The SDK's call context, with the agent the URL names."""

    def build(self, request: StarletteRequest) -> ServerCallContext:
        context = super().build(request)
        context.state["agent"] = request.path_params["name"]
        return context


def agent_card(config: AgentConfig, base_url: str, version: int | None) -> AgentCard:
    """The card of an agent served at `base_url` (the orchestrator's, as the caller reached it)."""
    url = f"{base_url.rstrip('/')}/a2a/{config.name}"
    return AgentCard(
        name=config.name,
        description=config.description or f"The agentrunner agent {config.name}",
        version=str(version or 1),
        provider=AgentProvider(organization="agentrunner", url=base_url),
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding=JSONRPC, protocol_version=PROTOCOL_VERSION_1_0),
            AgentInterface(url=url, protocol_binding=JSONRPC, protocol_version=PROTOCOL_VERSION_0_3),
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        security_schemes={
            API_KEY_SCHEME: SecurityScheme(
                api_key_security_scheme=APIKeySecurityScheme(
                    location="header", name="X-API-Key", description="An agentrunner API key (API_KEYS)"
                )
            ),
            BEARER_SCHEME: SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="bearer", description="The same API key, as Authorization: Bearer <key>"
                )
            ),
        },
        security_requirements=[
            SecurityRequirement(schemes={API_KEY_SCHEME: StringList()}),
            SecurityRequirement(schemes={BEARER_SCHEME: StringList()}),
        ],
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id=config.name,
                name=config.name,
                description=config.description or config.name,
                tags=list(config.tags) or [config.agent_type],
            )
        ],
    )


def a2a_routes(app: FastAPI, orchestrator: Orchestrator, limits: InputLimits, default_wait: float) -> None:
    """Add the A2A endpoints of the orchestrator's agents to `app`."""
    dispatcher = JsonRpcDispatcher(
        request_handler=ExecutionTasks(orchestrator, limits, default_wait, app.state.stream_slots),
        context_builder=_AgentOfUrl(),
        enable_v0_3_compat=True,
    )
    registry = orchestrator.registry

    def exposed(name: str) -> AgentConfig:
        """The config of an agent served over A2A (404 `agent_not_found` for any other name)."""
        agent = registry.agents.get(name)
        if agent is None or agent.config is None or not agent.config.expose.a2a:
            raise AgentNotFoundError(f"agent {name!r} is not served over A2A", agent=name)
        return agent.config

    def card_of(config: AgentConfig, request: Request) -> dict[str, Any]:
        return agent_card_to_dict(agent_card(config, str(request.base_url), registry.version_of(config.name)))

    @app.get(
        "/a2a",
        tags=["a2a"],
        summary="The A2A agent cards of the agents served over A2A",
        response_model=list[dict[str, Any]],
    )
    async def a2a_agents(request: Request) -> list[dict[str, Any]]:
        return [
            card_of(agent.config, request)
            for agent in registry.agents.values()
            if agent.config is not None and agent.config.expose.a2a and agent.status.runs
        ]

    @app.get(
        f"/a2a/{{name}}{AGENT_CARD_WELL_KNOWN_PATH}",
        tags=["a2a"],
        summary="An agent's A2A agent card",
        response_model=dict[str, Any],
        responses={404: {"description": "No such agent, or it is not served over A2A (expose.a2a false)."}},
    )
    async def a2a_card(name: str, request: Request) -> JSONResponse:
        return JSONResponse(card_of(exposed(name), request))

    @app.post(
        "/a2a/{name}",
        tags=["a2a"],
        summary="A2A JSON-RPC: send a message (a new execution), stream it, get or cancel a task",
        description="JSON-RPC 2.0 of the A2A protocol. A2A 1.0 methods (SendMessage, SendStreamingMessage, "
        "GetTask, CancelTask, SubscribeToTask) with the header `A2A-Version: 1.0`; the 0.3 methods "
        "(message/send, message/stream, tasks/get, tasks/cancel) without. A task is an execution: its id is "
        "the execution id, its context id the session; the message's text parts are the prompt. Streaming "
        "answers server-sent events. A task of another tenant or agent is not found.",
        responses={404: {"description": "No such agent, or it is not served over A2A (expose.a2a false)."}},
    )
    async def a2a_rpc(name: str, request: Request) -> Response:
        exposed(name)
        return await dispatcher.handle_requests(request)
