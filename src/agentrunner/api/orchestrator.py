"""Orchestrator role (8003): agents, invocations and executions."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse

from agentrunner.api.edge import EdgeConfig, role_app
from agentrunner.api.idempotency import REPLAYED_HEADER, reused_key_response, route_claim
from agentrunner.api.limits import InputLimits, StreamSlots, check_task_size, execution_preview
from agentrunner.api.models import (
    Accepted,
    AgentDetailView,
    AgentView,
    ExecutionDetail,
    ExecutionList,
    ExecutionListItem,
    Published,
)
from agentrunner.api.steps import with_steps
from agentrunner.api.tool_answers import tool_answer_routes
from agentrunner.api.ui import UI_PATH, mount_dashboard
from agentrunner.api.views import agent_detail_view, agent_view
from agentrunner.domain.agent_version import MAX_VERSION
from agentrunner.domain.audit import AuditAction
from agentrunner.domain.errors import BadRequestError, ExecutionNotFoundError
from agentrunner.domain.event import StoredDeadLetter
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.webhook import WEBHOOK_URL_PATTERN
from agentrunner.ports.state import IdempotencyKeyTakenError
from agentrunner.runtime.audit import Auditor
from agentrunner.runtime.dead_letters import DeadLetterOffice
from agentrunner.runtime.execution_stream import EVENT_ID_MAX_LENGTH, EVENT_ID_PATTERN, StreamPosition
from agentrunner.runtime.orchestrator import Orchestrator
from agentrunner.runtime.ownership import owned
from agentrunner.runtime.replays import replay
from agentrunner.tracing import visible_tenant

MAX_WAIT_SECONDS = 3600
MAX_REPLAY_STEP = 2**31 - 1  # what a database integer holds; the journal's own length bounds it first


class InvokeRequest(BaseModel):
    """Body of `POST /agents/{name}/invoke`."""

    task_data: dict[str, Any] = Field(
        min_length=1,
        description="What the agent should work on; `prompt` is the usual key. Required, at least one "
        "field, at most MAX_TASK_BYTES as JSON (413 past it).",
    )
    session_id: str | None = Field(
        default=None, max_length=256, description="Conversation to continue (continuous agents)."
    )
    stream: bool = Field(
        default=False, description="Stream the answer's text to GET /executions/{id}/events as it comes."
    )
    wait: float | None = Field(
        default=None,
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="Seconds to wait for the result (default 60), 202 sooner when it waits for a human; "
        "0 answers 202 at once.",
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=WEBHOOK_URL_PATTERN,
        description="POST the execution's record here when it ends, signed (X-AgentRunner-Signature); "
        "overrides the agent's webhook_url. Needs WEBHOOK_SECRET.",
    )


class PublishRequest(BaseModel):
    """Body of `POST /events`."""

    topic: str = Field(
        description="Dot-separated words, e.g. customer.ticket.created. The platform's own roots (invoke, "
        "execution, agent.output, config, scheduled, slack, clarification, plan, budget, node, collaboration) "
        "are refused: 403 topic_reserved.",
        max_length=255,
    )
    payload: dict[str, Any] = Field(
        default_factory=dict,
        description="Becomes the task_data of agents that run; at most MAX_TASK_BYTES as JSON (413 past it).",
    )


class ReplayRequest(BaseModel):
    """Body of `POST /executions/{id}/replay`."""

    from_step: int = Field(
        ge=0,
        le=MAX_REPLAY_STEP,
        strict=True,  # "3", 3.0 or true are not a step: 422, not a guess
        description="How many steps of the execution's journal (its last generation, in seq order) to reuse: "
        "0 runs everything again, N reuses steps 1..N and runs from step N+1 on. At most the number of steps "
        "(422 step_out_of_range past it).",
    )
    stream: bool = Field(
        default=False, description="Stream the answer's text to GET /executions/{id}/events as it comes."
    )
    wait: float | None = Field(
        default=None,
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="Seconds to wait for the result (default 60), 202 sooner when it waits for a human; "
        "0 answers 202 at once.",
    )


InvokeExtras = Callable[[Execution], Awaitable[dict[str, Any]]]


# Invocations record their Idempotency-Key with the execution (api/idempotency.py).
_INVOKE_PATH = re.compile(r"/agents/[^/]+/invoke")


def orchestrator_app(
    orchestrator: Orchestrator,
    dead_letters: DeadLetterOffice,
    edge: EdgeConfig,
    default_wait: float,
    invoke_extras: InvokeExtras | None = None,
    limits: InputLimits | None = None,
    audit: Auditor | None = None,
) -> FastAPI:
    """The orchestrator's HTTP API. `invoke_extras` adds fields to an invocation's answer
    (a collaborative agent's plan run); `limits` bound what callers send and see; `audit`
    records dead-letter replays and discards."""
    limits = limits or InputLimits()
    # The dashboard's files hold no data: served without a key; its API calls send one.
    app = role_app("orchestrator", "agentrunner orchestrator", edge, public=(UI_PATH,), keyed_by_route=_INVOKE_PATH)

    @app.get("/agents", response_model=list[AgentView], tags=["agents"])
    async def list_agents() -> list[AgentView]:
        return [agent_view(agent) for agent in orchestrator.registry.agents.values()]

    @app.get("/agents/{name}", response_model=AgentDetailView, tags=["agents"])
    async def get_agent(name: str) -> AgentDetailView:
        return agent_detail_view(orchestrator.registry.get(name))

    @app.post(
        "/agents/{name}/invoke",
        tags=["agents"],
        responses={200: {"model": Execution}, 202: {"model": Accepted}},
        summary="Run an agent on a task",
    )
    async def invoke(name: str, request: InvokeRequest, http: Request) -> Response:
        check_task_size(request.task_data, limits.max_task_bytes)
        wait = default_wait if request.wait is None else request.wait
        claim = route_claim(http)  # an Idempotency-Key, recorded with the execution
        replayed = {}
        try:
            execution = await orchestrator.invoke(
                name,
                request.task_data,
                session_id=request.session_id,
                wait=wait,
                stream=request.stream,
                webhook_url=request.webhook_url,
                idempotency=claim,
            )
        except IdempotencyKeyTakenError as taken:  # a retry: answered as its original was
            earlier = taken.earlier
            if claim is None or earlier.fingerprint != claim.fingerprint:
                return reused_key_response()
            execution = await orchestrator.wait_for(earlier.execution_id, wait, human_ends_it=True)
            replayed = {REPLAYED_HEADER: "true"}
        extras = await invoke_extras(execution) if invoke_extras else {}
        if execution.status.is_terminal and wait > 0:  # wait 0: accepted (202), even a retry's
            return JSONResponse(execution.model_dump(mode="json") | extras, status_code=200, headers=replayed)
        accepted = Accepted(
            execution_id=execution.execution_id,
            status=execution.status,
            trace_id=execution.trace_id,
            session_id=execution.session_id,
        )
        answer = accepted.model_dump(mode="json", exclude_none=True)  # session_id: only with a session
        return JSONResponse(answer | extras, status_code=202, headers=replayed)

    @app.post("/events", response_model=Published, status_code=202, tags=["events"], summary="Publish an event")
    async def publish_event(request: PublishRequest) -> Published:
        check_task_size(request.payload, limits.max_task_bytes, what="payload")
        event = await orchestrator.publish_event(request.topic, request.payload)
        return Published(event_id=event.event_id, topic=event.topic, trace_id=event.trace_id)

    _execution_routes(app, orchestrator, limits, default_wait)
    tool_answer_routes(app, orchestrator)
    _dead_letter_routes(app, dead_letters, audit or Auditor(None))
    mount_dashboard(app)

    return app


def _resumed_from(last_event_id: str | None, after: str | None) -> StreamPosition | None:
    """Where a client resumes an execution's stream: after the event it names (the header
    wins over `?after=`), or nowhere (from now on)."""
    given = last_event_id or after
    return StreamPosition.parse(given) if given else None


def _execution_routes(app: FastAPI, orchestrator: Orchestrator, limits: InputLimits, default_wait: float) -> None:
    """Reading, watching, cancelling and replaying executions: the caller's own (every one
    for an admin); another tenant's answers 404 as a missing one does."""
    slots = StreamSlots(limits.max_streams_per_tenant)
    app.state.stream_slots = slots  # every stream of the orchestrator's counts here (A2A's too)

    async def visible(execution_id: str) -> Execution:
        execution = await orchestrator.execution(execution_id)
        return owned(execution, execution.tenant, lambda: _no_execution(execution_id))

    @app.get(
        "/executions/{execution_id}",
        response_model=ExecutionDetail,
        response_model_exclude_unset=True,  # `webhook` only for executions that have one
        tags=["executions"],
    )
    async def get_execution(execution_id: str) -> ExecutionDetail:
        execution = await visible(execution_id)
        detail = ExecutionDetail(**with_steps(execution, await orchestrator.steps(execution)).model_dump())
        if not execution.webhook_url:
            return detail
        return detail.model_copy(update={"webhook": await orchestrator.webhook_delivery(execution)})

    @app.get(
        "/executions/{execution_id}/events",
        tags=["executions"],
        summary="Server-sent events: status changes, streamed text, then the finished record",
        description="Each event has an id, strictly increasing: `generation.seq.offset`, its place in the "
        "execution's journal, and for a status or ping a fourth counter (`generation.seq.offset.n`). "
        "Reconnecting with `Last-Event-ID` (or `?after=`) sends the current status, then what was missed "
        "since that event, from the journal, then goes on live: no tool call twice, no text twice, across a "
        "worker's crash. Without, the stream starts from now. After the id of `finished`, the stream has "
        "nothing more: 204 (an EventSource stops reconnecting). At most MAX_STREAMS_PER_TENANT streams open "
        "per tenant (429 past it); a stream ends after MAX_STREAM_SECONDS: reconnect to follow on.",
        response_class=EventSourceResponse,
        responses={204: {"description": "The execution has ended and the client has read its `finished`."}},
    )
    async def execution_events(
        execution_id: str,
        last_event_id: Annotated[
            str | None,
            Header(
                alias="Last-Event-ID",
                max_length=EVENT_ID_MAX_LENGTH,
                pattern=EVENT_ID_PATTERN,
                description="The id of the last event read; sent by EventSource on reconnect.",
            ),
        ] = None,
        after: Annotated[
            str | None,
            Query(
                max_length=EVENT_ID_MAX_LENGTH,
                pattern=EVENT_ID_PATTERN,
                description="The same as Last-Event-ID, for clients that cannot set headers (the header wins).",
            ),
        ] = None,
    ) -> Response:
        execution = await visible(execution_id)  # 404 before the stream starts
        position = _resumed_from(last_event_id, after)
        if position is not None and await orchestrator.watchers.read_through(execution, position):
            return Response(status_code=204)  # not `finished` again: an EventSource would reconnect for ever
        tenant = slots.take()  # 429 before the stream starts
        watched = orchestrator.watchers.watch(execution_id, after=position)
        return EventSourceResponse(_sse(watched, slots, tenant, limits.max_stream_seconds))

    @app.post(
        "/executions/{execution_id}/cancel",
        tags=["executions"],
        responses={200: {"model": Execution}, 202: {"model": Execution}},
        summary="Cancel a queued or running execution",
    )
    async def cancel_execution(execution_id: str) -> JSONResponse:
        await visible(execution_id)
        execution = await orchestrator.cancel(execution_id)
        # 200: it is cancelled; 202: its worker was asked to stop it (GET it to see the end).
        status = 200 if execution.status.is_terminal else 202
        return JSONResponse(execution.model_dump(mode="json"), status_code=status)

    @app.post(
        "/executions/{execution_id}/replay",
        tags=["executions"],
        responses={200: {"model": Execution}, 202: {"model": Accepted}},
        summary="Run an ended execution again, reusing its first steps",
        description="A new execution of the same agent on the same input: its first `from_step` steps are "
        "taken from this execution's journal (nothing is called for them: no model call, no tool call) and "
        "the rest run anew. The new execution is yours and records `replay_of`. 409 while this one runs.",
    )
    async def replay_execution(execution_id: str, request: ReplayRequest) -> JSONResponse:
        source = await visible(execution_id)
        wait = default_wait if request.wait is None else request.wait
        execution = await replay(orchestrator, source, request.from_step, wait=wait, stream=request.stream)
        if execution.status.is_terminal and wait > 0:
            return JSONResponse(execution.model_dump(mode="json"), status_code=200)
        accepted = Accepted(execution_id=execution.execution_id, status=execution.status, trace_id=execution.trace_id)
        return JSONResponse(accepted.model_dump(mode="json", exclude_none=True), status_code=202)

    @app.get("/executions", response_model=ExecutionList, tags=["executions"])
    async def list_executions(
        agent: str | None = None,
        status: ExecutionStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
        agent_version: Annotated[
            int | None, Query(ge=1, le=MAX_VERSION, description="Only those run on this version of `agent`.")
        ] = None,
    ) -> ExecutionList:
        if agent_version is not None and not agent:
            raise BadRequestError("agent_version is a number of one agent's versions: give agent too")
        page = await orchestrator.executions(
            agent=agent,
            status=status,
            limit=limit,
            cursor=cursor,
            tenant=visible_tenant(),
            agent_version=agent_version,
        )
        items = []
        for execution in page.items:
            shown, cut = execution_preview(execution, limits.preview_bytes)
            items.append(ExecutionListItem(**shown.model_dump(), truncated=cut))
        return ExecutionList(items=items, next_cursor=page.next_cursor)


async def _sse(
    watched: AsyncIterator[dict[str, Any]], slots: StreamSlots, tenant: str | None, seconds: float
) -> AsyncIterator[dict[str, str]]:
    """The events of a watched execution as sse-starlette sends them, for at most `seconds`,
    holding one of the tenant's stream slots meanwhile."""
    with slots.held(tenant):
        async for update in _for_at_most(watched, seconds):
            yield {"event": update["event"], "data": json.dumps(update["data"]), "id": update["id"]}


async def _for_at_most(updates: AsyncIterator[dict[str, Any]], seconds: float) -> AsyncIterator[dict[str, Any]]:
    """`updates` until they end or `seconds` have passed, whichever is first. The deadline
    wraps each wait, never a `yield`: a timeout must not land in the stream's consumer."""
    deadline = asyncio.get_running_loop().time() + seconds
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    update = await anext(updates)
            except (StopAsyncIteration, TimeoutError):
                return
            yield update
    finally:
        close = getattr(updates, "aclose", None)  # a generator's own cleanup, at once
        if close is not None:
            await close()


def _no_execution(execution_id: str) -> ExecutionNotFoundError:
    return ExecutionNotFoundError(f"execution {execution_id} not found", execution_id=execution_id)


def _dead_letter_routes(app: FastAPI, dead_letters: DeadLetterOffice, auditor: Auditor) -> None:
    """Listing and replaying dead letters: a tenant's own (the tenant of their event), every
    one for an admin (DeadLetterOffice scopes each operation to the caller). Replays and
    discards are recorded in `auditor`."""

    @app.get("/dead-letters", response_model=list[StoredDeadLetter], tags=["dead letters"])
    async def list_dead_letters(
        include_replayed: bool = False, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[StoredDeadLetter]:
        return await dead_letters.list(include_replayed=include_replayed, limit=limit)

    @app.post(
        "/dead-letters/{letter_id}/replay",
        response_model=StoredDeadLetter,
        tags=["dead letters"],
        summary="Deliver the event again to its queue, from attempt 1",
    )
    async def replay_dead_letter(letter_id: str) -> StoredDeadLetter:
        letter = await dead_letters.replay(letter_id)
        await auditor.record(AuditAction.DEAD_LETTER_REPLAY, letter_id, queue=letter.queue, topic=letter.topic)
        return letter

    @app.delete("/dead-letters/{letter_id}", status_code=204, tags=["dead letters"], summary="Forget a dead letter")
    async def delete_dead_letter(letter_id: str) -> None:
        await dead_letters.discard(letter_id)
        await auditor.record(AuditAction.DEAD_LETTER_DISCARD, letter_id)
