"""`/mcp` on the orchestrator: the agents as the tools of a Model Context Protocol server
(streamable HTTP, the `mcp` SDK's low-level `Server`, stateless: any replica answers any
request). A tool is an agent whose file leaves `expose.mcp` on; calling it invokes the agent
as `POST /agents/{name}/invoke` does (the caller's tenant, its budgets and limits, the
execution recorded), waits for its end while sending progress notifications, and answers its
output. A refusal or a failed execution is a tool result with `isError` and the API's error
code. A call whose request stream drops, or that the client cancels, cancels its execution.

The API key middleware of the orchestrator's app runs before this endpoint: no key, no MCP.
The SDK's tasks are started from the request's, so they work as its caller (tenant, trace)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agentrunner.api.limits import InputLimits, check_task_size
from agentrunner.domain.agent import AgentConfig
from agentrunner.domain.errors import AgentNotFoundError, AgentRunnerError, InputInvalidError
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.exposed import arguments_problems, task_of, tool_input_schema, tool_output_schema
from agentrunner.logs import get_logger
from agentrunner.runtime.orchestrator import Orchestrator

log = get_logger(__name__)

MCP_PATH = "/mcp"
# While an agent runs, a progress notification this often; also the longest a cancelled call
# waits before it cancels its execution (the wait between two reads of the execution).
PROGRESS_SECONDS = 2.0
EXECUTION_META = "agentrunner/execution_id"
SESSION_META = "agentrunner/session_id"

Progress = Callable[[float, str], Awaitable[None]]


def mcp_route(orchestrator: Orchestrator, limits: InputLimits) -> Route:
    """The `/mcp` route of the orchestrator's app: POST the JSON-RPC messages. A stateless
    server has no session to end (DELETE: 405) and nothing to send unasked: a GET, which
    would hold an event stream open for ever with nothing on it, is a 405 too (the spec's
    answer of a server without that stream)."""
    return Route(MCP_PATH, McpEndpoint(orchestrator, limits), methods=["POST", "DELETE"])


class McpEndpoint:
    """The ASGI app of `/mcp`: each request is served by a stateless session manager of its
    own, whose tasks live as long as the request (none outlives it, no lifespan to run)."""

    def __init__(self, orchestrator: Orchestrator, limits: InputLimits) -> None:
        self._server = mcp_server(orchestrator, limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = StreamableHTTPSessionManager(self._server, stateless=True)
        async with manager.run():
            await manager.handle_request(scope, receive, send)


def exposed(orchestrator: Orchestrator) -> list[AgentConfig]:
    """The agents served as tools: loaded, able to run, `expose.mcp` on."""
    return [
        agent.config
        for agent in orchestrator.registry.agents.values()
        if agent.config is not None and agent.status.runs and agent.config.expose.mcp
    ]


def as_tool(config: AgentConfig) -> types.Tool:
    """The MCP tool of an agent."""
    return types.Tool(
        name=config.name,
        description=config.description or None,
        inputSchema=tool_input_schema(config),
        outputSchema=tool_output_schema(config),
    )


def mcp_server(orchestrator: Orchestrator, limits: InputLimits) -> Server[Any, Any]:
    """The low-level MCP server: `tools/list` and `tools/call` over the exposed agents."""
    server: Server[Any, Any] = Server("agentrunner", instructions="Each tool runs one agent of this agentrunner.")

    async def list_tools(_: types.ListToolsRequest) -> types.ServerResult:
        return types.ServerResult(types.ListToolsResult(tools=[as_tool(config) for config in exposed(orchestrator)]))

    async def call_tool(request: types.CallToolRequest) -> types.ServerResult:
        context = server.request_context
        token = context.meta.progressToken if context.meta is not None else None
        progress: Progress | None = None
        if token is not None:

            async def progress(count: float, status: str) -> None:
                await context.session.send_progress_notification(
                    token, count, message=f"execution {status}", related_request_id=str(context.request_id)
                )

        name, arguments = request.params.name, request.params.arguments or {}
        try:
            result = await called(orchestrator, limits, name, arguments, progress)
        except AgentRunnerError as exc:
            result = failure(exc.code, exc.message)
        return types.ServerResult(result)

    server.request_handlers[types.ListToolsRequest] = list_tools
    server.request_handlers[types.CallToolRequest] = call_tool
    return server


async def called(
    orchestrator: Orchestrator,
    limits: InputLimits,
    name: str,
    arguments: dict[str, Any],
    progress: Progress | None,
) -> types.CallToolResult:
    """Invoke the agent `name` on `arguments` and wait for its end (cancelled with the call).
    Raises our errors for what refuses the call before an execution exists."""
    config = next((config for config in exposed(orchestrator) if config.name == name), None)
    if config is None:  # an opted-out agent is not there, as a missing one is not
        raise AgentNotFoundError(f"no tool {name[:100]!r}: tools/list names the agents served over MCP", agent=name)
    check_task_size(arguments, limits.max_task_bytes, what="arguments")
    problems = arguments_problems(config, arguments)
    if problems:
        raise InputInvalidError(f"arguments do not follow the tool's inputSchema: {'; '.join(problems)}")
    task, session = task_of(config, arguments)
    # Shielded, as every store call of the call: a cancellation that landed inside one would
    # cut a database connection; it lands between them instead (within PROGRESS_SECONDS).
    with anyio.CancelScope(shield=True):
        execution = await orchestrator.invoke(config.name, task, session_id=session, wait=PROGRESS_SECONDS)
    try:
        execution = await _followed(orchestrator, execution, progress)
    except BaseException:  # the call cancelled, its stream dropped: so is the execution
        with anyio.CancelScope(shield=True), contextlib.suppress(AgentRunnerError):
            await orchestrator.cancel(execution.execution_id, message="the MCP call was cancelled")
            log.info("mcp call cancelled", execution_id=execution.execution_id, agent=config.name)
        raise
    return outcome(config, execution)


async def _followed(orchestrator: Orchestrator, execution: Execution, progress: Progress | None) -> Execution:
    """`execution` (as it stood PROGRESS_SECONDS after it was accepted) once it has ended,
    telling `progress` its status every PROGRESS_SECONDS."""
    count = 0
    while not execution.status.is_terminal:
        await anyio.lowlevel.checkpoint()  # where the call's cancellation lands
        if progress is not None:
            count += 1
            await progress(count, execution.status.value)
        with anyio.CancelScope(shield=True):
            execution = await orchestrator.wait_for(execution.execution_id, PROGRESS_SECONDS)
    return execution


def outcome(config: AgentConfig, execution: Execution) -> types.CallToolResult:
    """The tool result of an ended execution: its output (and structured answer), or its
    error as `code: message` with isError."""
    meta = {EXECUTION_META: execution.execution_id}
    if execution.session_id:
        meta[SESSION_META] = execution.session_id
    if execution.status is not ExecutionStatus.SUCCEEDED:
        error = execution.error
        code, message = (error.code, error.message) if error else (execution.status.value, "the execution did not end")
        return failure(code, f"{message} (execution {execution.execution_id})", meta)
    structured = execution.output_json if tool_output_schema(config) is not None else None
    text = execution.output if execution.output is not None else json.dumps(execution.output_json)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structuredContent=structured if isinstance(structured, dict) else None,
        isError=False,
        _meta=meta,
    )


def failure(code: str, message: str, meta: dict[str, Any] | None = None) -> types.CallToolResult:
    """A tool result that says the call failed, with the API's error code first."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{code}: {message}")], isError=True, _meta=meta
    )
