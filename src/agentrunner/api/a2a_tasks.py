"""A2A tasks as executions: the request handler behind `/a2a/{name}` (api/a2a.py).

A task is an execution (its id is the execution id, its context the execution's session);
a message is an invocation through the same path as `POST /agents/{name}/invoke` (the
caller's tenant, budgets, limits, the execution recorded), its text parts the `prompt`,
its data parts more fields of `task_data`. Reading and cancelling a task look the
execution up within the caller's tenant and the agent of the URL: anything else is not
found, as REST answers another tenant's execution."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

from a2a.helpers.proto_helpers import get_data_parts, get_text_parts
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.types.a2a_pb2 import (
    AgentCard,
    Artifact,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import (
    A2AError,
    ExtendedAgentCardNotConfiguredError,
    InternalError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)

from agentrunner.api.limits import InputLimits, StreamSlots, check_task_size
from agentrunner.domain.errors import (
    AgentRunnerError,
    BadRequestError,
    ConflictError,
    ExecutionNotFoundError,
    PayloadTooLargeError,
)
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.runtime.orchestrator import Orchestrator
from agentrunner.runtime.ownership import may_see

MAX_CONTEXT_ID_LENGTH = 256  # a session id, as REST's `session_id` takes it
OUTPUT_ARTIFACT = "output"

STATES = {
    ExecutionStatus.QUEUED: TaskState.TASK_STATE_SUBMITTED,
    ExecutionStatus.RUNNING: TaskState.TASK_STATE_WORKING,
    ExecutionStatus.WAITING_APPROVAL: TaskState.TASK_STATE_INPUT_REQUIRED,
    ExecutionStatus.SUCCEEDED: TaskState.TASK_STATE_COMPLETED,
    ExecutionStatus.FAILED: TaskState.TASK_STATE_FAILED,
    ExecutionStatus.TIMED_OUT: TaskState.TASK_STATE_FAILED,
    ExecutionStatus.CANCELLED: TaskState.TASK_STATE_CANCELED,
}


def agent_of(context: ServerCallContext) -> str:
    """The agent of the request's URL (`/a2a/{name}`), put there by api/a2a.py."""
    return str(context.state["agent"])


def task_data_of(message: Message) -> dict[str, Any]:
    """What the agent works on: the text parts joined as `prompt`, the fields of data parts
    (JSON objects) beside it. Raises `InvalidParamsError` for a message with neither."""
    texts = get_text_parts(message.parts)
    task_data: dict[str, Any] = {}
    for value in get_data_parts(message.parts):
        if not isinstance(value, dict):
            raise InvalidParamsError(message="a data part must be a JSON object (its fields join task_data)")
        task_data |= value
    if texts:
        task_data["prompt"] = "\n".join(texts)
    if not task_data:
        raise InvalidParamsError(message="the message has no text or data part: nothing to work on")
    return task_data


def _agent_message(execution: Execution, text: str) -> Message:
    return Message(
        message_id=f"{execution.execution_id}-{execution.status.value}",
        context_id=execution.session_id or "",
        task_id=execution.execution_id,
        role=Role.ROLE_AGENT,
        parts=[Part(text=text)],
    )


def status_of(execution: Execution) -> TaskStatus:
    """The task's status: the state the execution's status maps to, the answer (or the
    error) as its message once it ended."""
    status = TaskStatus(state=STATES[execution.status])
    when = execution.finished_at or execution.started_at or execution.created_at
    status.timestamp.FromDatetime(when)
    if execution.status is ExecutionStatus.SUCCEEDED and execution.output is not None:
        status.message.CopyFrom(_agent_message(execution, execution.output))
    elif execution.error is not None and execution.status.is_terminal:
        status.message.CopyFrom(_agent_message(execution, f"{execution.error.code}: {execution.error.message}"))
    return status


def output_artifact(text: str) -> Artifact:
    return Artifact(artifact_id=OUTPUT_ARTIFACT, name=OUTPUT_ARTIFACT, parts=[Part(text=text)])


def task_of(execution: Execution) -> Task:
    """The execution as an A2A task: its output as the `output` artifact once it succeeded."""
    task = Task(id=execution.execution_id, context_id=execution.session_id or "", status=status_of(execution))
    if execution.status is ExecutionStatus.SUCCEEDED and execution.output is not None:
        task.artifacts.append(output_artifact(execution.output))
    return task


def a2a_error(exc: AgentRunnerError) -> A2AError:
    """Our error as the protocol's: its code in `data`, its message bounded."""
    data = {"code": exc.code}
    message = exc.message[:1000]
    if isinstance(exc, ExecutionNotFoundError):
        return TaskNotFoundError(data=data)
    if isinstance(exc, PayloadTooLargeError | BadRequestError):
        return InvalidParamsError(message=message, data=data)
    if isinstance(exc, ConflictError):
        return TaskNotCancelableError(message=message, data=data)
    return InternalError(message=message, data=data)


class ExecutionTasks(RequestHandler):
    """The A2A methods of the agents the orchestrator serves, as executions."""

    def __init__(
        self, orchestrator: Orchestrator, limits: InputLimits, default_wait: float, slots: StreamSlots
    ) -> None:
        self._orchestrator = orchestrator
        self._limits = limits
        self._default_wait = default_wait
        self._slots = slots  # the orchestrator's: REST's streams and these share MAX_STREAMS_PER_TENANT

    async def _invoke(self, params: SendMessageRequest, context: ServerCallContext, *, stream: bool) -> Execution:
        message = params.message
        if message.task_id:
            raise UnsupportedOperationError(
                message="a task is not continued by a message: send a new one (same context_id for the same session)"
            )
        if len(message.context_id) > MAX_CONTEXT_ID_LENGTH:
            raise InvalidParamsError(message=f"context_id is longer than {MAX_CONTEXT_ID_LENGTH} characters")
        task_data = task_data_of(message)
        blocking = not (params.HasField("configuration") and params.configuration.return_immediately)
        wait = self._default_wait if blocking and not stream else 0.0
        try:
            check_task_size(task_data, self._limits.max_task_bytes, what="the message")
            return await self._orchestrator.invoke(
                agent_of(context), task_data, session_id=message.context_id or None, wait=wait, stream=stream
            )
        except AgentRunnerError as exc:
            raise a2a_error(exc) from exc

    async def _visible(self, task_id: str, context: ServerCallContext) -> Execution:
        """The execution of `task_id` when it is the caller's and of this URL's agent."""
        try:
            execution = await self._orchestrator.execution(task_id)
        except ExecutionNotFoundError as exc:
            raise TaskNotFoundError from exc
        if not may_see(execution.tenant) or execution.agent != agent_of(context):
            raise TaskNotFoundError
        return execution

    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        return task_of(await self._invoke(params, context, stream=False))

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        with self._stream_slot():  # refused before anything is accepted
            execution = await self._invoke(params, context, stream=True)
            yield task_of(execution)
            async for event in self._followed(execution):
                yield event

    @contextlib.contextmanager
    def _stream_slot(self) -> Iterator[None]:
        """One of the caller's tenant's stream slots (MAX_STREAMS_PER_TENANT, REST's event
        streams included), held for the block."""
        try:
            tenant = self._slots.take()
        except AgentRunnerError as exc:
            raise a2a_error(exc) from exc
        with self._slots.held(tenant):
            yield

    async def _followed(self, execution: Execution) -> AsyncIterator[Event]:
        """What happens to `execution` as A2A events: status updates, the answer's text as
        pieces of the `output` artifact, then its final status; for at most
        MAX_STREAM_SECONDS."""
        watched = self._orchestrator.watchers.watch(execution.execution_id)
        streamed = False
        deadline = asyncio.get_running_loop().time() + self._limits.max_stream_seconds
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        update = await anext(watched)
                except (StopAsyncIteration, TimeoutError):
                    return
                kind, data = update["event"], update["data"]
                if kind == "status" and data.get("status") in STATES:
                    execution = execution.model_copy(update={"status": ExecutionStatus(data["status"])})
                    if not execution.status.is_terminal:  # the end comes with `finished`
                        yield self._status_event(execution)
                elif kind == "text" and data.get("text"):
                    yield TaskArtifactUpdateEvent(
                        task_id=execution.execution_id,
                        context_id=execution.session_id or "",
                        artifact=output_artifact(data["text"]),
                        append=streamed,
                    )
                    streamed = True
                elif kind == "finished":
                    ended = Execution.model_validate(data)
                    if ended.status is ExecutionStatus.SUCCEEDED and ended.output is not None and not streamed:
                        yield TaskArtifactUpdateEvent(
                            task_id=ended.execution_id,
                            context_id=ended.session_id or "",
                            artifact=output_artifact(ended.output),
                            last_chunk=True,
                        )
                    yield self._status_event(ended)
                    return
        finally:
            close = getattr(watched, "aclose", None)  # the watch's own cleanup, at once
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    @staticmethod
    def _status_event(execution: Execution) -> TaskStatusUpdateEvent:
        """A status update; a terminal state ends the stream (A2A 1.0 has no `final` flag)."""
        return TaskStatusUpdateEvent(
            task_id=execution.execution_id, context_id=execution.session_id or "", status=status_of(execution)
        )

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        return task_of(await self._visible(params.id, context))

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        execution = await self._visible(params.id, context)
        try:
            execution = await self._orchestrator.cancel(execution.execution_id, message="cancelled by an A2A client")
        except AgentRunnerError as exc:
            raise a2a_error(exc) from exc
        return task_of(execution)

    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        raise UnsupportedOperationError(message="GET /executions?agent=<name> lists an agent's executions")

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        execution = await self._visible(params.id, context)
        with self._stream_slot():
            yield task_of(execution)
            if not execution.status.is_terminal:
                async for event in self._followed(execution):
                    yield event

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        raise PushNotificationNotSupportedError

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        raise PushNotificationNotSupportedError

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        raise ExtendedAgentCardNotConfiguredError
