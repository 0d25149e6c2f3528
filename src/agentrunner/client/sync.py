"""`Client`: the orchestrator's API from code that does not run an event loop (see
`AsyncClient` for the same with `await`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import httpx
from pydantic import BaseModel, TypeAdapter

from agentrunner.api.models import (
    Accepted,
    AgentDetailView,
    AgentView,
    ExecutionDetail,
    ExecutionList,
    ExecutionListItem,
    PlanRunList,
    PlanRunView,
    Published,
)
from agentrunner.client.errors import ConnectionFailedError, WaitTimeoutError
from agentrunner.client.wire import (
    DEFAULT_RETRY_SECONDS,
    START,
    Deadline,
    InvokeResult,
    Retries,
    SseReader,
    StreamEvent,
    client_options,
    headers_of,
    invoke_body,
    new_idempotency_key,
    params_of,
    refusal_delay,
    server_wait,
)
from agentrunner.domain.execution import Execution, ExecutionStatus
from agentrunner.domain.plan import PlanRun

log = logging.getLogger("agentrunner.client")
M = TypeVar("M", bound=BaseModel)
_AGENTS = TypeAdapter(list[AgentView])


class Client:
    """The orchestrator's API: invoke agents, follow and answer their executions.

    `base_url` defaults to AGENTRUNNER_URL (else http://127.0.0.1:8003), `api_key` to
    AGENTRUNNER_API_KEY. Each call retries a failed connection and a 502/503 (after its
    Retry-After) for `retry_seconds`, sending the same `Idempotency-Key` with every retry of
    a POST: a call runs once however many times it was sent. Errors are `APIError`s with
    the API's `code`. Redirects are not followed (the key goes to this URL only)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(**client_options(base_url, api_key, timeout), transport=transport)
        self._timeout = timeout
        self.retry_seconds = retry_seconds

    @property
    def base_url(self) -> str:
        return str(self._http.base_url).rstrip("/")

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One logical call: sent, and sent again (same Idempotency-Key on a POST) while the
        connection fails or the answer is a 502/503, for `retry_seconds`. Raises `APIError`
        for an error answer, `ConnectionFailedError` when nobody answered."""
        headers = headers_of(method, idempotency_key or new_idempotency_key())
        retries = Retries(self.retry_seconds)
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        while True:
            try:
                response = self._http.request(method, path, params=params, json=json, headers=headers, **extra)
            except httpx.TransportError as exc:
                delay = retries.delay()
                if delay is None:
                    raise ConnectionFailedError(self.base_url, str(exc) or type(exc).__name__) from exc
                log.info("retrying %s %s after %s", method, path, type(exc).__name__)
                time.sleep(delay)
                continue
            if response.status_code < 300:  # a redirect is an error: the key goes to this URL only
                return response
            delay = refusal_delay(response, retries)
            log.info("retrying %s %s after HTTP %s", method, path, response.status_code)
            time.sleep(delay)

    def _model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate_json(self.request(method, path, **kwargs).content)

    # -- agents ---------------------------------------------------------------------------

    def agents(self) -> list[AgentView]:
        """Every agent, with its status and why it cannot run fully (when it cannot)."""
        return _AGENTS.validate_json(self.request("GET", "/agents").content)

    def agent(self, name: str) -> AgentDetailView:
        """One agent in full: triggers, tools, reasons, warnings."""
        return self._model(AgentDetailView, "GET", f"/agents/{name}")

    @overload
    def invoke(
        self,
        agent: str,
        prompt: str | None = None,
        *,
        task_data: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        wait: Literal[True] = True,
        timeout: float | None = None,
        stream: bool = False,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> InvokeResult: ...

    @overload
    def invoke(
        self,
        agent: str,
        prompt: str | None = None,
        *,
        task_data: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        wait: Literal[False],
        timeout: float | None = None,
        stream: bool = False,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Accepted: ...

    def invoke(
        self,
        agent: str,
        prompt: str | None = None,
        *,
        task_data: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
        stream: bool = False,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> InvokeResult | Accepted:
        """Run `agent` on `prompt` (as `task_data.prompt`) or on `task_data`. With `wait`,
        the execution once it has ended or stops to wait for a human (status
        `waiting_approval`): `WaitTimeoutError` after `timeout` seconds (None: no end).
        Without, the accepted execution's id at once."""
        deadline = Deadline(timeout)
        body = invoke_body(
            prompt,
            task_data,
            session_id=session_id,
            stream=stream,
            webhook_url=webhook_url,
            server_wait=server_wait(wait, timeout),
        )
        response = self.request(
            "POST",
            f"/agents/{agent}/invoke",
            json=body,
            idempotency_key=idempotency_key,
            timeout=self._timeout + body["wait"],  # the server holds the answer that long
        )
        if response.status_code == 200:
            return InvokeResult.model_validate_json(response.content)
        accepted = Accepted.model_validate_json(response.content)
        if not wait:
            return accepted
        if accepted.status is ExecutionStatus.WAITING_APPROVAL:
            return InvokeResult.model_validate(self.get_execution(accepted.execution_id).model_dump())
        ended = self._wait(accepted.execution_id, deadline)
        return InvokeResult.model_validate(ended.model_dump())

    # -- executions -----------------------------------------------------------------------

    def get_execution(self, execution_id: str) -> ExecutionDetail:
        """The execution's record, with its journal (`steps`)."""
        return self._model(ExecutionDetail, "GET", f"/executions/{execution_id}")

    def list_executions_page(
        self,
        *,
        agent: str | None = None,
        status: ExecutionStatus | str | None = None,
        agent_version: int | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ExecutionList:
        """One page of executions, newest first; `next_cursor` names the next page."""
        params = params_of(agent=agent, status=status, agent_version=agent_version, limit=limit, cursor=cursor)
        return self._model(ExecutionList, "GET", "/executions", params=params)

    def list_executions(
        self,
        *,
        agent: str | None = None,
        status: ExecutionStatus | str | None = None,
        agent_version: int | None = None,
        page_size: int = 50,
    ) -> Iterator[ExecutionListItem]:
        """Every execution that matches, newest first, page after page as they are read."""
        cursor: str | None = None
        while True:
            page = self.list_executions_page(
                agent=agent, status=status, agent_version=agent_version, limit=page_size, cursor=cursor
            )
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def cancel(self, execution_id: str) -> Execution:
        """Cancel a queued or running execution: cancelled, or asked to stop (`get_execution` to see its end)."""
        return self._model(Execution, "POST", f"/executions/{execution_id}/cancel")

    def wait(self, execution_id: str, timeout: float | None = None) -> Execution:
        """The execution once it has ended or stops to wait for a human, followed on its stream."""
        return self._wait(execution_id, Deadline(timeout))

    def _wait(self, execution_id: str, deadline: Deadline) -> Execution:
        for event in self._events(execution_id, None, deadline, pings=False):
            if event.event == "finished":
                return Execution.model_validate(event.data)
            if event.event == "status" and event.data.get("status") == ExecutionStatus.WAITING_APPROVAL:
                return self.get_execution(execution_id)
        raise WaitTimeoutError(execution_id, deadline.timeout or 0.0)  # pragma: no cover - the stream ends in one

    def stream(self, execution_id: str, *, after: str | None = START, pings: bool = False) -> Iterator[StreamEvent]:
        """The execution's events, `finished` last: from its start (`after=START`), after
        the event `after` names, or from now on (`after=None`). A dropped connection is
        resumed where it stopped (`Last-Event-ID`): no event lost, none twice."""
        return self._events(execution_id, after, Deadline(None), pings=pings)

    def _events(
        self, execution_id: str, after: str | None, deadline: Deadline, *, pings: bool
    ) -> Iterator[StreamEvent]:
        last = after
        retries = Retries(self.retry_seconds)
        path = f"/executions/{execution_id}/events"
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            timeout = httpx.Timeout(self._timeout, read=deadline.read_timeout())
            try:
                with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                    if response.status_code == 204:  # it ended, and its `finished` was read
                        return
                    if response.status_code >= 300:
                        response.read()
                        time.sleep(refusal_delay(response, retries))
                        continue
                    reader = SseReader()
                    for line in response.iter_lines():
                        event = reader.line(line)
                        if event is None:
                            continue
                        retries = Retries(self.retry_seconds)  # it answered: a new window
                        last = event.id or last
                        if event.event != "ping" or pings:
                            yield event
                        if event.event == "finished":
                            return
                        if deadline.over:
                            raise WaitTimeoutError(execution_id, deadline.timeout or 0.0)
            except httpx.TransportError as exc:
                if deadline.over:
                    raise WaitTimeoutError(execution_id, deadline.timeout or 0.0) from exc
                delay = retries.delay()
                if delay is None:
                    raise ConnectionFailedError(self.base_url, str(exc) or type(exc).__name__) from exc
                log.info("resuming the stream of %s after %s", execution_id, type(exc).__name__)
                time.sleep(delay)

    # -- events, approvals, clarifications ----------------------------------------------

    def publish(self, topic: str, payload: Mapping[str, Any] | None = None) -> Published:
        """Publish an event: the agents subscribed to `topic` run on `payload`."""
        return self._model(Published, "POST", "/events", json={"topic": topic, "payload": dict(payload or {})})

    def approve(self, execution_id: str) -> Execution:
        """Run the tool call the execution waits to have approved: it is queued again."""
        return self._model(Execution, "POST", f"/executions/{execution_id}/approve")

    def deny(self, execution_id: str, reason: str | None = None) -> Execution:
        """Refuse the tool call the execution waits on (the model reads `reason`): it is queued again."""
        body = {"reason": reason} if reason is not None else None
        return self._model(Execution, "POST", f"/executions/{execution_id}/deny", json=body)

    def tool_outcome(
        self, execution_id: str, *, happened: bool = False, result: str | None = None, again: bool = False
    ) -> Execution:
        """Say what became of a tool call a crash cut short: it `happened` (with its
        `result`), run it `again`, or (neither) fail the execution."""
        body: dict[str, Any] = {"happened": True} if happened else {"again": True} if again else {"fail": True}
        if result is not None:
            body["result"] = result
        return self._model(Execution, "POST", f"/executions/{execution_id}/tool-outcome", json=body)

    def list_plan_runs(self, *, agent: str | None = None, status: str | None = None, limit: int = 50) -> list[PlanRun]:
        """Plan runs of collaborative agents, newest first."""
        params = params_of(agent=agent, status=status, limit=limit)
        return self._model(PlanRunList, "GET", "/plan-runs", params=params).items

    def get_plan_run(self, run_id: str) -> PlanRunView:
        """A plan run: its plan, steps, questions and the tool calls its steps wait on."""
        return self._model(PlanRunView, "GET", f"/plan-runs/{run_id}")

    def approve_plan(self, run_id: str, plan: Mapping[str, Any] | None = None) -> PlanRun:
        """Run a plan held for approval, as it is or as `plan` (`{"steps": [...]}`) edits it."""
        body = {"plan": dict(plan)} if plan is not None else None
        return self._model(PlanRun, "POST", f"/plan-runs/{run_id}/approve", json=body)

    def reject_plan(self, run_id: str, reason: str | None = None) -> PlanRun:
        """Refuse a plan held for approval."""
        body = {"reason": reason} if reason is not None else None
        return self._model(PlanRun, "POST", f"/plan-runs/{run_id}/reject", json=body)

    def answer_clarification(
        self, run_id: str, clarification_id: str, response: str, *, answered_by: str | None = None
    ) -> PlanRun:
        """Answer the question a step of a plan run asked."""
        body = params_of(response=response, answered_by=answered_by)
        return self._model(PlanRun, "POST", f"/plan-runs/{run_id}/clarifications/{clarification_id}", json=body)
