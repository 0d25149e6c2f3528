"""A real A2A agent written with the official `a2a-sdk`'s server (its request handler, task
store and Starlette routes), for the tests of agentrunner's `a2a` tools: served on a
loopback port in a thread. It answers `remote <agent> got: <text>` as a completed task's
artifact, records every message text and the headers each call came with, and its card
may announce another JSON-RPC URL than its own (`announced`), as a hostile card would."""

from __future__ import annotations

from dataclasses import dataclass, field

from a2a.helpers.proto_helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Part
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

from tests.ports import free_port
from tests.threaded_server import ThreadedServer


@dataclass
class A2aTestServer:
    """`with A2aTestServer(name="remote") as server:`; its card is at `server.card_url`."""

    name: str = "remote"
    port: int = field(default_factory=free_port)
    announced: str | None = None  # the JSON-RPC URL the card names (its own when None)
    texts: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    _served: ThreadedServer = field(init=False)

    def __post_init__(self) -> None:
        self._served = ThreadedServer("A2A test server", self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def card_url(self) -> str:
        return f"{self.url}/.well-known/agent-card.json"

    def _app(self) -> Starlette:
        card = AgentCard(
            name=self.name,
            description="A remote agent of the tests, on the a2a-sdk",
            version="1",
            supported_interfaces=[
                AgentInterface(url=self.announced or f"{self.url}/", protocol_binding="JSONRPC", protocol_version="1.0")
            ],
            capabilities=AgentCapabilities(streaming=True),
            default_input_modes=["text/plain"],
            default_output_modes=["text/plain"],
            skills=[AgentSkill(id="echo", name="echo", description="Says what it got", tags=["test"])],
        )
        server = self

        class Remote(AgentExecutor):
            async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
                assert context.message is not None
                task = context.current_task or new_task_from_user_message(context.message)
                await event_queue.enqueue_event(task)
                text = context.get_user_input()
                server.texts.append(text)
                updater = TaskUpdater(event_queue, task.id, task.context_id)
                await updater.add_artifact([Part(text=f"remote {server.name} got: {text}")], name="answer")
                await updater.complete()

            async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
                return None

        handler = DefaultRequestHandler(agent_executor=Remote(), task_store=InMemoryTaskStore(), agent_card=card)

        async def record(request: Request, call_next: RequestResponseEndpoint) -> Response:
            self.headers.append({k.lower(): v for k, v in request.headers.items()})
            return await call_next(request)

        app = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/")])
        app.add_middleware(BaseHTTPMiddleware, dispatch=record)
        return app

    def start(self) -> A2aTestServer:
        self._served.start(self._app())
        return self

    def stop(self) -> None:
        self._served.stop()

    def __enter__(self) -> A2aTestServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
